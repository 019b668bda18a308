"""The one way a URL's credentials are hidden before text reaches the console, a log, an
error message, MLflow or a committed file: `mask_url`.

Every `scheme://userinfo@` in a text becomes `scheme://***@`, whether the userinfo is
`user:password`, a bare token, or masked already. The password may hold an unescaped '/'
(AWS secret keys are often pasted as is), so everything up to the '@' is hidden.
"""

from __future__ import annotations

import re

MASK = "***"
# scheme://user:password@ or scheme://token@; the password part may contain '/'
USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^/@\s:]*)(?P<password>:[^@\s]*)?@")


def mask_url(text: str) -> str:
    """`text` with the userinfo of every URL in it masked: `http://***@host`. Text without
    URLs comes back unchanged; masking twice changes nothing."""
    return USERINFO.sub(lambda match: f"{match.group('scheme')}{MASK}@", text)
