"""The bundled acquirer host simulator: SQLite store, request logic, asyncio TCP server, load client."""
