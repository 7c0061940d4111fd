"""Shadows uvloop for a gateway started by bench/gateway.py with an `@asyncio` config.

`manage.py runmesh` installs uvloop when it can import it and otherwise runs on the stock
asyncio loop (its documented fallback). Putting this directory first on PYTHONPATH makes
the import fail, so that one gateway process runs on the stock loop; nothing else changes.
"""

raise ImportError("uvloop hidden by bench/stock_asyncio (the gateway runs on the stock asyncio loop)")
