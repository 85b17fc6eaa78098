"""RPC handlers, one module per API namespace; importing this package registers them all."""

from . import account, bots, channels, messages, upload  # noqa: F401
