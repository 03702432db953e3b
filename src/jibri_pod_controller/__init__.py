"""Keeps a pool of spare Jibri pods: detaches busy ones, deletes finished ones."""
