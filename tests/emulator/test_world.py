"""The world on its own: ids, pins, files, updates, persistence — the contract both fronts rely on."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tools.emulator.records import channel_chat_id, channel_id_of
from tools.emulator.world import World, WorldError


@pytest.fixture
def world(tmp_path):
    w = World.open(tmp_path / "w")
    yield w
    w.close()


def make_channel(world: World):
    owner = world.create_user("Owner")
    bot = world.create_bot("store_bot")
    chan = world.create_channel("storage", owner.user_id)
    world.set_admin(chan.chat_id, bot.user_id)
    return owner, bot, chan


@given(st.integers(min_value=1, max_value=10**12 - 1))
def test_channel_chat_id_round_trips(channel_id):
    chat_id = channel_chat_id(channel_id)
    assert chat_id == -(10**12 + channel_id)
    if 10**9 <= channel_id < 10**10:  # the usual 10-digit ids read as "-100" + id
        assert str(chat_id) == f"-100{channel_id}"
    assert channel_id_of(chat_id) == channel_id
    assert channel_id_of(channel_id) is None


def test_channel_message_ids_are_sequential_and_survive_deletion(world):
    _, bot, chan = make_channel(world)
    ids = [world.send_message(chan.chat_id, bot.user_id, text=f"m{i}").message_id for i in range(5)]
    assert ids == [1, 2, 3, 4, 5]
    assert world.delete_messages(chan.chat_id, [5, 9]) == [5]
    assert world.send_message(chan.chat_id, bot.user_id, text="next").message_id == 6
    assert [m.message_id for m in world.history(chan.chat_id, newest_first=False)] == [1, 2, 3, 4, 6]


def test_private_dialogs_are_per_bot(world):
    user = world.create_user("U")
    bot_a, bot_b = world.create_bot("a_bot"), world.create_bot("b_bot")
    world.user_says(user.user_id, bot_a.user_id, "hi a")
    world.user_says(user.user_id, bot_b.user_id, "hi b")
    reply = world.send_message(user.user_id, bot_a.user_id, text="hello")
    assert reply.message_id == 2 and reply.chat_id == user.user_id
    assert [m.text for m in world.history(user.user_id, actor_id=bot_b.user_id)] == ["hi b"]
    with pytest.raises(WorldError):
        world.chat(user.user_id)  # ambiguous without the bot's id


def test_bot_cannot_open_a_dialog(world):
    user, bot = world.create_user("U"), world.create_bot("x_bot")
    with pytest.raises(WorldError) as err:
        world.send_message(user.user_id, bot.user_id, text="spam")
    assert err.value.code == "USER_IS_BLOCKED"


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=1, max_size=12), st.randoms())
def test_pinned_message_is_latest_by_sending_date(tmp_path_factory, plan, rnd):
    """Whatever order pins happen in, getChat's pinned message is the pinned one sent last."""
    world = World.open(tmp_path_factory.mktemp("pins"))
    try:
        _, bot, chan = make_channel(world)
        sent = []
        for day, _ in plan:
            world.knobs.clock_offset_s = day * 86400  # dates may repeat: ties go to the higher id
            sent.append(world.send_message(chan.chat_id, bot.user_id, text="x"))
        to_pin = [m for m, (_, pin) in zip(sent, plan, strict=True) if pin]
        rnd.shuffle(to_pin)
        for m in to_pin:
            world.pin_message(chan.chat_id, m.message_id)
        got = world.pinned_message(chan.chat_id)
        if not to_pin:
            assert got is None
        else:
            expected = max(to_pin, key=lambda m: (m.date, m.message_id))
            assert got is not None and got.message_id == expected.message_id
    finally:
        world.close()


def test_unpin_without_id_unpins_the_reported_one(world):
    _, bot, chan = make_channel(world)
    for i in range(3):
        world.send_message(chan.chat_id, bot.user_id, text=str(i))
    world.pin_message(chan.chat_id, 3)
    world.pin_message(chan.chat_id, 1)
    assert world.unpin_message(chan.chat_id) == [3]
    assert world.pinned_message(chan.chat_id).message_id == 1


def test_files_read_by_range_and_file_ids_are_per_bot(world):
    data = bytes(random.Random(1).randbytes(300_000))
    rec = world.store_file(data, "part.bin")
    assert rec.size == len(data) and rec.dc_id == 1
    assert world.read_file_range(rec.id, 0, 1 << 20) == data
    assert world.read_file_range(rec.id, 4096, 4096) == data[4096:8192]
    assert world.read_file_range(rec.id, len(data), 10) == b""
    bot_a, bot_b = world.create_bot("fa_bot"), world.create_bot("fb_bot")
    fid = world.bot_file_id(rec, bot_a.user_id)
    assert world.file_by_bot_file_id(fid, bot_a.user_id) == rec
    assert world.file_by_bot_file_id(fid, bot_b.user_id) is None
    assert world.file_by_bot_file_id(fid[:-2] + "AA", bot_a.user_id) is None  # forged tag


@settings(max_examples=25, deadline=None)
@given(st.binary(min_size=1, max_size=5000), st.integers(1, 9), st.randoms())
def test_upload_parts_in_any_order_assemble_the_same_file(tmp_path_factory, data, nparts, rnd):
    world = World.open(tmp_path_factory.mktemp("up"))
    try:
        size = -(-len(data) // nparts)
        parts = [(off, data[off:off + size]) for off in range(0, len(data), size)]
        rnd.shuffle(parts)
        writer = world.open_upload()
        for off, chunk in parts:
            writer.write_at(off, chunk)
        rec = writer.finish("f.bin")
        assert world.read_file(rec.id) == data
        assert world.store_file_from_parts(iter([data[:3], data[3:]]), "g.bin").size == len(data)
    finally:
        world.close()


def test_update_offsets_confirm_and_survive_reopen(tmp_path):
    world = World.open(tmp_path / "w")
    user, bot = world.create_user("U"), world.create_bot("u_bot")
    for i in range(4):
        world.user_says(user.user_id, bot.user_id, f"t{i}")
    ups = world.get_updates(bot.user_id)
    assert [u.update_id for u in ups] == [1, 2, 3, 4]
    assert [u.payload["message"]["text"] for u in world.get_updates(bot.user_id, offset=3)] == ["t2", "t3"]
    world.close()
    world = World.open(tmp_path / "w")
    assert [u.update_id for u in world.get_updates(bot.user_id)] == [3, 4]
    assert [u.update_id for u in world.get_updates(bot.user_id, offset=-1)] == [4]
    world.user_says(user.user_id, bot.user_id, "t4")
    assert [u.update_id for u in world.get_updates(bot.user_id, offset=5)] == [5]
    world.close()


def test_allowed_updates_filter_what_is_queued(world):
    user, bot = world.create_user("U"), world.create_bot("f_bot")
    world.set_allowed_updates(bot.user_id, ["callback_query"])
    world.user_says(user.user_id, bot.user_id, "ignored")
    assert world.get_updates(bot.user_id) == []


def test_world_persists_everything(tmp_path):
    world = World.open(tmp_path / "w")
    demo = world.ensure_demo()
    chat = demo["storage_chat_id"]
    rec = world.store_file(b"payload", "a.json", "application/json")
    world.send_message(chat, demo["bot_id"], document=rec, caption="cap", reply_markup={"inline_keyboard": []})
    world.pin_message(chat, 1)
    world.edit_message(chat, 1, caption="cap2")
    world.extra["mtproto"] = {"keys": [1, 2]}
    world.close()

    world = World.open(tmp_path / "w")
    assert world.ensure_demo() == demo
    msg = world.get_message(chat, 1)
    assert msg.caption == "cap2" and msg.edit_date is not None and msg.pinned
    assert world.read_file(msg.document.id) == b"payload"
    assert world.extra["mtproto"] == {"keys": [1, 2]}
    assert world.is_admin(chat, demo["bot_id"], "can_post_messages")
    world.close()


def test_interrupted_uploads_are_swept_on_open(tmp_path):
    world = World.open(tmp_path / "w")
    writer = world.open_upload()
    writer.write_at(0, b"half")
    world.close()  # "crash": never finished
    world = World.open(tmp_path / "w")
    assert list(world.tmp_dir.iterdir()) == []
    world.close()


def test_one_emulator_per_data_directory(tmp_path):
    world = World.open(tmp_path / "w")
    with pytest.raises(RuntimeError, match="another emulator"):
        World.open(tmp_path / "w")
    world.close()
    World.open(tmp_path / "w").close()
