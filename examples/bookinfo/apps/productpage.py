"""Bookinfo's product page: the one service users see.

GET  /productpage                       the book, its details and its reviews, as HTML
GET  /api/v1/products                   the catalogue, as JSON
GET  /api/v1/products/<id>              details of one book (from details)
GET  /api/v1/products/<id>/reviews      its reviews (from reviews)
GET  /api/v1/products/<id>/ratings      its ratings (from ratings)
GET  /static/<file>                     the stylesheet
POST /login (form field username)       sets the `user` cookie
GET  /logout                            clears it
GET  /health

Calls details and reviews with a 3 s timeout (reviews gets one retry),
passing on the tracing headers and `end-user: <name>` when someone is
logged in (the `user` cookie) or the request already named a user. The
cookie itself is never passed on.
"""

import html
import http.cookies
import os
import re
import urllib.parse

from bookinfo_common import Handler, get_json, propagated, serve, service_url

CALL_TIMEOUT = 3.0
REVIEWS_TRIES = 2
MAX_FORM = 4096
USER_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
STATIC_FILES = {"bookinfo.css": "text/css; charset=utf-8"}

PRODUCT = {
    "id": 0,
    "title": "The Weaver's Almanac",
    "descriptionHtml": (
        "A year in a mill town, told one loom at a time: twelve chapters, "
        "twelve knots, and a mystery that only unravels in December."
    ),
}

DETAILS_UNAVAILABLE = "Sorry, product details are currently unavailable for this book."
REVIEWS_UNAVAILABLE = "Sorry, product reviews are currently unavailable for this book."
DETAIL_FIELDS = (
    ("Author", "author"),
    ("Year", "year"),
    ("Type", "type"),
    ("Pages", "pages"),
    ("Publisher", "publisher"),
    ("Language", "language"),
    ("ISBN-10", "ISBN-10"),
    ("ISBN-13", "ISBN-13"),
)


class ProductPage(Handler):
    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        if path == "/health":
            return self.send_json(200, {"status": "Productpage is healthy"})
        if path in ("/", "/index.html"):
            return self.redirect("/productpage")
        if path == "/productpage":
            return self.product_page()
        if path == "/logout":
            return self.redirect("/productpage", "user=; Path=/; Max-Age=0")
        if path.startswith("/static/"):
            return self.static(path[len("/static/") :])
        if path == "/api/v1/products":
            return self.send_json(200, [PRODUCT])
        match = re.fullmatch(r"/api/v1/products/(\d+)(?:/(reviews|ratings))?", path)
        if match:
            return self.api(int(match.group(1)), match.group(2) or "details")
        self.send_json(404, {"error": "no such page: %s" % path})

    def do_POST(self):
        if urllib.parse.urlsplit(self.path).path != "/login":
            return self.send_json(404, {"error": "no such page: %s" % self.path})
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_FORM:
            message = "Content-Length: a form of at most %d bytes please" % MAX_FORM
            self.close_connection = True
            return self.send_body(400, message.encode(), "text/plain; charset=utf-8")
        form = urllib.parse.parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        user = (form.get("username") or [""])[0].strip()
        if not USER_NAME.fullmatch(user):
            message = "username: 1 to 64 letters, digits or ._@- please"
            return self.send_body(400, message.encode(), "text/plain; charset=utf-8")
        self.redirect("/productpage", "user=%s; Path=/" % user)

    # --- who is asking, and what goes on to the services ---

    def user(self):
        """The logged-in user (cookie), else the end-user the request named."""
        cookies = http.cookies.SimpleCookie()
        try:
            cookies.load(self.headers.get("Cookie") or "")
        except http.cookies.CookieError:
            pass
        if "user" in cookies and USER_NAME.fullmatch(cookies["user"].value):
            return cookies["user"].value
        return self.headers.get("end-user") or None

    def outgoing_headers(self):
        headers = propagated(self.headers)
        headers.pop("end-user", None)
        user = self.user()
        if user:
            headers["end-user"] = user
        return headers

    def call(self, service, path, tries=1):
        """JSON from `service`, or None once every try failed or timed out."""
        url = service_url(service) + path
        for attempt in range(1, tries + 1):
            try:
                return get_json(url, self.outgoing_headers(), CALL_TIMEOUT)
            except Exception as err:  # timeouts, refusals, HTTP errors, bad JSON
                self.log_message("%s (try %d of %d): %s", url, attempt, tries, err)
        return None

    # --- pages ---

    def api(self, product_id, what):
        if what == "details":
            answer = self.call("details", "/details/%d" % product_id)
        elif what == "reviews":
            answer = self.call("reviews", "/reviews/%d" % product_id, REVIEWS_TRIES)
        else:
            answer = self.call("ratings", "/ratings/%d" % product_id)
        if answer is None:
            return self.send_json(503, {"error": "%s service is currently unavailable" % what})
        self.send_json(200, answer)

    def product_page(self):
        details = self.call("details", "/details/%d" % PRODUCT["id"])
        reviews = self.call("reviews", "/reviews/%d" % PRODUCT["id"], REVIEWS_TRIES)
        page = render_page(self.user(), details, reviews)
        self.send_body(200, page.encode(), "text/html; charset=utf-8")

    def static(self, name):
        if name not in STATIC_FILES:
            return self.send_json(404, {"error": "no such file: /static/%s" % name})
        try:
            with open(os.path.join(STATIC_DIR, name), "rb") as file:
                content = file.read()
        except OSError as err:
            return self.send_json(500, {"error": "/static/%s: %s" % (name, err)})
        self.send_body(200, content, STATIC_FILES[name])

    def redirect(self, location, cookie=None):
        headers = [("Location", location)]
        if cookie:
            headers.append(("Set-Cookie", cookie))
        self.send_body(302, b"", "text/plain", headers)


def render_page(user, details, reviews):
    e = html.escape
    if user:
        account = 'Logged in as %s <a href="/logout">Sign out</a>' % e(user)
    else:
        account = (
            '<form method="post" action="/login">'
            '<input name="username" placeholder="user name" required> '
            "<button>Sign in</button></form>"
        )
    if details is None:
        details_html = '<p class="error">%s</p>' % DETAILS_UNAVAILABLE
    else:
        rows = "".join(
            "<dt>%s</dt><dd>%s</dd>" % (label, e(str(details.get(key, "?"))))
            for label, key in DETAIL_FIELDS
        )
        details_html = "<dl>%s</dl>" % rows
    if reviews is None:
        reviews_html = '<p class="error">%s</p>' % REVIEWS_UNAVAILABLE
    else:
        reviews_html = "".join(render_review(review) for review in reviews.get("reviews", []))
        reviews_html += '<p class="served-by">Reviews served by: %s</p>' % e(
            str(reviews.get("podname", "?"))
        )
    return PAGE % {
        "title": e(PRODUCT["title"]),
        "summary": PRODUCT["descriptionHtml"],
        "account": account,
        "details": details_html,
        "reviews": reviews_html,
    }


def render_review(review):
    e = html.escape
    rating = review.get("rating") or {}
    if "error" in rating:
        stars = '<span class="error">%s</span>' % e(str(rating["error"]))
    elif "stars" in rating:
        count = max(0, min(5, int(rating["stars"])))
        color = re.sub(r"[^a-z#0-9]", "", str(rating.get("color", "black")))
        stars = '<span class="stars" style="color: %s">%s%s</span>' % (
            color,
            "\u2605" * count,
            "\u2606" * (5 - count),
        )
    else:
        stars = ""
    return "<blockquote><p>%s</p><footer>%s %s</footer></blockquote>" % (
        e(str(review.get("text", ""))),
        e(str(review.get("reviewer", ""))),
        stars,
    )


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Bookinfo: %(title)s</title>
<link rel="stylesheet" href="/static/bookinfo.css">
</head>
<body>
<header><h1>Bookinfo</h1><div class="account">%(account)s</div></header>
<main>
<h2>%(title)s</h2>
<p>%(summary)s</p>
<div class="columns">
<section class="details"><h3>Book details</h3>%(details)s</section>
<section class="reviews"><h3>Book reviews</h3>%(reviews)s</section>
</div>
</main>
</body>
</html>
"""

if __name__ == "__main__":
    serve(ProductPage, "bookinfo productpage")
