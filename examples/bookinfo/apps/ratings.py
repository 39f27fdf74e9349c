"""Bookinfo's ratings service: GET /ratings/<id> answers the stars each
reviewer gave (and echoes the propagated headers it saw)."""

import re

from bookinfo_common import Handler, pod_name, seen_headers, serve

RATINGS = {"Reviewer1": 5, "Reviewer2": 4}


class Ratings(Handler):
    def do_GET(self):
        if self.path == "/health":
            return self.send_json(200, {"status": "Ratings is healthy"})
        match = re.fullmatch(r"/ratings/(\d+)", self.path)
        if not match:
            return self.send_json(404, {"error": "no such page: %s" % self.path})
        self.send_json(
            200,
            {
                "id": int(match.group(1)),
                "ratings": RATINGS,
                "podname": pod_name(),
                "seen": seen_headers(self.headers),
            },
        )


if __name__ == "__main__":
    serve(Ratings, "bookinfo ratings")
