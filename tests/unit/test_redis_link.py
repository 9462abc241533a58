"""The pipelined link's wire format and error replies, without a server."""

from __future__ import annotations

from redis.exceptions import NoScriptError, ReadOnlyError, ResponseError

from services.auth.redis_link import pack, reply_error


def test_a_command_is_packed_as_resp_with_byte_lengths() -> None:
    assert pack([b"EVALSHA", b"ab", b"1", "kéy".encode()]) == (
        b"*4\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n1\r\n$4\r\nk\xc3\xa9y\r\n"
    )


def test_error_replies_become_the_exceptions_the_script_call_acts_on() -> None:
    assert type(reply_error("NOSCRIPT No matching script.")) is NoScriptError
    assert type(reply_error("READONLY You can't write against a read only replica.")) is ReadOnlyError
    assert type(reply_error("ERR user_script:1: boom")) is ResponseError
