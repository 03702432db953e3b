"""The pure layer: settings, Jibri's messages, pod facts, and every decision.

Plain values in, frozen values out. Nothing here awaits, reads the environment, logs or talks
to the network; an import contract (pyproject.toml) keeps aiohttp, the Kubernetes client,
prometheus-client and asyncio out of it.
"""
