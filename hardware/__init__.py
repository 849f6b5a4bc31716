"""posemu hardware layer: ports (typing.Protocol), backends chosen by URL, virtual cards, the clock."""
