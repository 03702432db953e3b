"""The I/O layer: the HTTP server and the background loops, and the one place that writes.

Each loop reads through an adapter, asks a `core` function what to do, and hands the action to
`acting`, which turns it into API calls, a metric, an Event and a log line.
"""
