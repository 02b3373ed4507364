"""The conversation use cases: membership (R1–R5, R10), messages (R6, R8, R9),
the one send path (group commit), reading (list, history, replay, resume) and
uploads (R7).  Each module receives what it uses from :mod:`chat.app`."""
