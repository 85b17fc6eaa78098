"""The clicker's conversation, one router per concern, in the order the dispatcher tries them.

Admin commands come first (and match only admins, so anyone else falls through to the fallback, which
answers them as any unknown text); registration, then clicks and rating, then the fallback.
Routers are built by functions, not module globals, so several dispatchers can live in one process.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiogram import Router

from bot.handlers import admin, clicks, fallback, registration


def routers(admin_ids: Iterable[int]) -> list[Router]:
    return [admin.router(admin_ids), registration.router(), clicks.router(), fallback.router()]
