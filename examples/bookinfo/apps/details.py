"""Bookinfo's details service: GET /details/<id> answers the book's
publishing facts as JSON (and echoes the propagated headers it saw)."""

import re

from bookinfo_common import Handler, pod_name, seen_headers, serve

BOOK = {
    "author": "Ada Marlowe",
    "year": 1931,
    "type": "paperback",
    "pages": 212,
    "publisher": "Loomhouse Press",
    "language": "English",
    "ISBN-10": "0956012345",
    "ISBN-13": "978-0956012345",
}


class Details(Handler):
    def do_GET(self):
        if self.path == "/health":
            return self.send_json(200, {"status": "Details is healthy"})
        match = re.fullmatch(r"/details/(\d+)", self.path)
        if not match:
            return self.send_json(404, {"error": "no such page: %s" % self.path})
        answer = dict(BOOK, id=int(match.group(1)), podname=pod_name())
        answer["seen"] = seen_headers(self.headers)
        self.send_json(200, answer)


if __name__ == "__main__":
    serve(Details, "bookinfo details")
