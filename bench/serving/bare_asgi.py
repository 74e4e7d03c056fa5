"""The HTTP ceiling: a raw ASGI callable that answers every request with a fixed small JSON
body. It drains the request body (so keep-alive stays correct) but parses nothing.

    uvicorn bare_asgi:app --app-dir bench/serving --loop uvloop --http httptools --no-access-log
"""

BODY = b'{"predictions": [0]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
START = {"type": "http.response.start", "status": 200, "headers": HEADERS}
END = {"type": "http.response.body", "body": BODY}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:  # drain, do not parse
        msg = await receive()
        more = msg.get("more_body", False)
    await send(START)
    await send(END)
