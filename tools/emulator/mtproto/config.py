"""help.getConfig: a `Config` for layer 229 describing this emulator as the only data centre.

Every DC id Telegram uses (1..5) points at the emulator's own address, so a client that wanders to
another DC (a file's dc_id, an exported sender, FastTelethon's `_get_dc`) still lands here.
"""

from __future__ import annotations

import datetime

from telethon.tl import types

DC_ID = 2
DC_IDS = (1, 2, 3, 4, 5)


def build_config(host: str, port: int, *, this_dc: int = DC_ID, now: int) -> types.Config:
    date = datetime.datetime.fromtimestamp(now, tz=datetime.UTC)
    return types.Config(
        date=date,
        expires=date + datetime.timedelta(hours=1),
        test_mode=False,
        this_dc=this_dc,
        dc_options=[types.DcOption(id=dc, ip_address=host, port=port, ipv6=":" in host) for dc in DC_IDS],
        dc_txt_domain_name="emulator.invalid",
        chat_size_max=200,
        megagroup_size_max=200_000,
        forwarded_count_max=100,
        online_update_period_ms=210_000,
        offline_blur_timeout_ms=5_000,
        offline_idle_timeout_ms=30_000,
        online_cloud_timeout_ms=300_000,
        notify_cloud_delay_ms=30_000,
        notify_default_delay_ms=1_500,
        push_chat_period_ms=60_000,
        push_chat_limit=2,
        edit_time_limit=172_800,
        revoke_time_limit=172_800,
        revoke_pm_time_limit=2_147_483_647,
        rating_e_decay=2_419_200,
        stickers_recent_limit=200,
        channels_read_media_period=604_800,
        call_receive_timeout_ms=20_000,
        call_ring_timeout_ms=90_000,
        call_connect_timeout_ms=30_000,
        call_packet_timeout_ms=10_000,
        me_url_prefix="https://t.me/",
        caption_length_max=1024,
        message_length_max=4096,
        webfile_dc_id=DC_ID,
        tmp_sessions=None,
    )
