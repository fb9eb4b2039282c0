"""Training on request from the api: a ``paperfeed train`` process beside it.

ALS keeps the CPU busy for seconds to minutes; a separate process keeps the api's event
loop free, and ``pf:train:lock`` keeps two trainers from running at once.
"""

from __future__ import annotations

import asyncio
import os
import sys

from paperfeed.core import Core
from paperfeed.settings import settings_env
from paperfeed.store import keys


async def start_training(core: Core) -> bool:
    """Launch a trainer unless one runs; True when one was launched."""
    if await core.redis.exists(keys.TRAIN_LOCK):
        return False
    await core.redis.set(keys.TRAIN_REQUESTED, "api", ex=86_400)
    # The trainer runs with this process's settings, whatever its environment says.
    env = {**os.environ, **settings_env(core.settings), "REDIS_URL": core.redis_url}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "paperfeed.cli",
        "train",
        "--quiet",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=None,
    )
    # Reap the trainer when it exits, so no zombie is left behind.
    asyncio.get_running_loop().create_task(process.wait())
    return True
