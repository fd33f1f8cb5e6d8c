"""A local image server standing in for a CDN: the benchmark's images from memory over HTTP/1.1
keep-alive, with Content-Length, Content-Type, ETag and Cache-Control, as a CDN edge answers.

    python benchmarks/_cdn.py PORT LIST     serves the n-th file named in LIST at /img/n.jpg
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from aiohttp import web


def make_app(files: list[Path]) -> web.Application:
    bodies = [path.read_bytes() for path in files]
    etags = [hashlib.sha1(body).hexdigest()[:16] for body in bodies]

    async def image(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if not name.isdigit() or int(name) >= len(bodies):
            raise web.HTTPNotFound()
        n = int(name)
        return web.Response(
            body=bodies[n],
            content_type="image/jpeg",
            headers={"ETag": f'"{etags[n]}"', "Cache-Control": "public, max-age=31536000"},
        )

    app = web.Application()
    app.router.add_get("/img/{name}.jpg", image)
    return app


if __name__ == "__main__":
    port, listing = sys.argv[1:]
    web.run_app(
        make_app([Path(n) for n in Path(listing).read_text().splitlines() if n]),
        host="127.0.0.1",
        port=int(port),
        access_log=None,
        print=None,
    )
