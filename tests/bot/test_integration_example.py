"""The example in examples/notes_bot.py, run as docs/integration.md shows it, against the emulator."""

from __future__ import annotations

import asyncio

from examples import notes_bot
from tools.emulator.testing import running_emulator
from tools.loadgen.control import Control


async def test_the_example_bot_keeps_its_dialogue_and_notes_across_a_restart(tmp_path):
    async with running_emulator(tmp_path / "tg", rate_limits=False) as emu, Control(emu.control_url) as control:
        demo = emu.demo()
        user = await control.create_user("Ann")

        async def say(text: str) -> list[str]:
            return (await control.say(user, demo.bot_username, text, wait=10.0)).replies

        for restart_mid_dialogue in (True, False):
            stop = asyncio.Event()
            serving = asyncio.create_task(notes_bot.run(demo.bot_token, str(tmp_path / "state"), emu.bot_api_url,
                                                        stop=stop))
            try:
                if restart_mid_dialogue:
                    assert await say("/notes") == ["No notes yet."]
                    assert await say("/note") == ["Send the note's text."]
                else:  # the dialogue step survived the restart
                    assert await say("milk") == ["Saved (1 notes)."]
                    assert await say("/note") == ["Send the note's text."]
                    assert await say("bread") == ["Saved (2 notes)."]
                    assert await say("/notes") == ["1. milk\n2. bread"]
            finally:
                stop.set()
                await serving
