"""A local Telegram: one persistent world behind a Bot API front (HTTP) and an MTProto front (TCP).

Run it with `python -m tools.emulator --data DIR`; embed it with `tools.emulator.app.Emulator`.
"""
