"""Consumer.pipe(S3Sink): everything lands in S3; only what S3 holds is checkpointed."""

from __future__ import annotations

import anyio
import orjson

from shardflow import Consumer, MemoryCheckpointer, S3Sink

from support import create_stream
from support_consumer import POLL, no_more, put_records
from support_sinks import all_lines, new_bucket


async def test_pipe_archives_everything_and_resumes_after_it(moto_url: str) -> None:
    stream = create_stream(moto_url, shards=2)
    bucket = new_bucket(moto_url)
    items = [(f"user-{i % 20}", orjson.dumps({"i": i})) for i in range(300)]
    put_records(moto_url, stream, items)
    checkpointer = MemoryCheckpointer()

    def archived() -> list[int]:
        return [line["i"] for _, line in all_lines(moto_url, bucket)]

    async with Consumer(
        stream, app_name="archive", checkpointer=checkpointer, endpoint_url=moto_url,
        poll_interval=POLL,
    ) as consumer:
        sink = S3Sink(bucket, prefix="logs", max_bytes=2_000, max_interval=0.5, stream=stream,
                      endpoint_url=moto_url, compression="gzip")
        async with anyio.create_task_group() as tg:
            tg.start_soon(consumer.pipe, sink)
            with anyio.fail_after(30):
                while len(await anyio.to_thread.run_sync(archived)) < len(items):  # noqa: ASYNC110
                    await anyio.sleep(0.1)  # polling S3 from outside, no event to wait on
            await consumer.aclose()

    lines = await anyio.to_thread.run_sync(archived)
    assert sorted(lines) == list(range(len(items)))

    # Everything S3 holds was checkpointed: a new consumer of the same app sees nothing.
    async with Consumer(
        stream, app_name="archive", checkpointer=checkpointer, endpoint_url=moto_url,
        poll_interval=POLL,
    ) as again:
        assert await no_more(again) == []
