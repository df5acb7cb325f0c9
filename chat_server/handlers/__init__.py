"""Use cases, one function per request type: ``async (hub, session, frame) -> reply | None``."""
