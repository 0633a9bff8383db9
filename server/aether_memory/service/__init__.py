"""Use cases that are more than one store call, beside `memories.py` (long-term memories) and
`episodes.py`: servicers translate protos and call these."""
