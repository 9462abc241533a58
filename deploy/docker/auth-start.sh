#!/bin/sh
# Auth's container start: make its private state on the volume once, then serve.
# The signing key and the session secret are created only when missing and then kept, so
# re-creating the container changes neither the key that verifies tokens already minted
# nor the secret that signs session cookies already handed out.
set -eu
(
    umask 077
    python -m services.auth keys init
    if [ ! -s "$SESSION_SECRET_FILE" ]; then
        python -c 'import secrets; print(secrets.token_urlsafe(48))' >"$SESSION_SECRET_FILE.new"
        mv "$SESSION_SECRET_FILE.new" "$SESSION_SECRET_FILE"
        echo "created a session secret in $SESSION_SECRET_FILE"
    fi
)
exec python -m services.auth serve
