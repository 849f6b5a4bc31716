"""posemu faults: the catalogue (data) and injectors that wrap readers, links, clocks and hosts."""
