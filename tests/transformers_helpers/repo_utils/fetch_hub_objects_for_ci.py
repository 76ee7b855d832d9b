"""`url_to_local_path` for the sdist's `test_processing_common.py` (written for OmniDRCA; see ../README.md).

transformers' CI downloads its test media once and the common tests then read the local copies. Here there is
no Hub: a URL maps to a file of the same name in the working directory when one exists (OmniDRCA's processor
test writes its audio clips there), and is returned unchanged otherwise.
"""

import os
from urllib.parse import urlparse


def url_to_local_path(url: str, return_url_if_not_found: bool = True) -> str:
    name = os.path.basename(urlparse(url).path)
    if name and os.path.isfile(name):
        return name
    if return_url_if_not_found:
        return url
    raise FileNotFoundError(f"No local copy of {url} (expected ./{name}).")
