"""SmtpSender against a real aiosmtpd server: security modes, auth, reuse, pacing, replies."""

import datetime
import ssl

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from providers.base import PermanentDeliveryError, ProviderUnavailable, TransientDeliveryError
from providers.email import build_message, make_message_id
from providers.local.settings import SmtpSettings
from providers.local.smtp import SmtpSender
from tests.e2e.conftest import free_port


class Recorder:
    def __init__(self, answers=()):
        self.answers = list(answers)
        self.messages = []
        self.sessions = set()

    async def handle_DATA(self, server, session, envelope):
        self.sessions.add(id(session))
        if self.answers:
            return self.answers.pop(0)
        self.messages.append(envelope.content)
        return "250 OK"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(san, False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    d = tmp_path_factory.mktemp("tls")
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return d / "cert.pem", d / "key.pem"


def server_context(tls_files):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*map(str, tls_files))
    return ctx


def client_context(tls_files):
    return ssl.create_default_context(cafile=str(tls_files[0]))


@pytest.fixture
def start():
    controllers = []

    def run(handler, **kw):
        c = Controller(handler, hostname="127.0.0.1", port=free_port(), **kw)
        c.start()
        controllers.append(c)
        return c.port

    yield run
    for c in controllers:
        c.stop()


def msg(i=1):
    return build_message(
        sender="Academy <noreply@academy.example>",
        to=f"l{i}@example.org",
        subject="Hi Zoë",
        html="<p>Hello</p>",
        text="Hello",
        message_id=make_message_id("job", i, "academy.example"),
    )


def test_one_connection_carries_many_messages(start):
    handler = Recorder()
    port = start(handler)
    with SmtpSender(SmtpSettings(port=port)) as sender:
        for i in range(20):
            sender.send(msg(i))
    assert len(handler.messages) == 20 and len(handler.sessions) == 1


def test_starttls_with_login(start, tls_files):
    def auth(server, session, envelope, mechanism, data):
        credentials = (b"offload", b"s3cret")
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == credentials
        return AuthResult(success=ok)

    handler = Recorder()
    port = start(handler, tls_context=server_context(tls_files), require_starttls=True,
                 authenticator=auth, auth_require_tls=True)  # fmt: skip
    settings = SmtpSettings(port=port, security="starttls", user="offload", password="s3cret",
                            ssl_context=client_context(tls_files))  # fmt: skip
    with SmtpSender(settings) as sender:
        sender.send(msg())
    assert len(handler.messages) == 1
    assert "s3cret" not in repr(settings)


def test_implicit_tls(start, tls_files):
    handler = Recorder()
    port = start(handler, ssl_context=server_context(tls_files))
    with SmtpSender(
        SmtpSettings(port=port, security="tls", ssl_context=client_context(tls_files))
    ) as sender:
        sender.send(msg())
    assert len(handler.messages) == 1


def test_4xx_is_retried_in_process_then_delivered(start):
    handler = Recorder(["451 4.3.0 try again"])
    port = start(handler)
    sleeps = []
    with SmtpSender(SmtpSettings(port=port, retry_backoff=(2.0,)), sleep=sleeps.append) as sender:
        sender.send(msg())
    assert len(handler.messages) == 1 and sleeps == [2.0]


def test_4xx_after_the_retries_is_transient(start):
    handler = Recorder(["451 4.3.0 busy"] * 3)
    port = start(handler)
    with pytest.raises(TransientDeliveryError) as err:
        sender = SmtpSender(SmtpSettings(port=port, retry_backoff=(0.0, 0.0)), sleep=lambda s: None)
        sender.send(msg())
    assert "451" in err.value.reply


def test_5xx_is_permanent_with_the_servers_reply(start):
    handler = Recorder(["554 5.7.1 message rejected as spam"])
    port = start(handler)
    with pytest.raises(PermanentDeliveryError) as err:
        SmtpSender(SmtpSettings(port=port)).send(msg())
    assert err.value.reply == "554 5.7.1 message rejected as spam"


def test_an_address_needing_smtputf8_on_a_server_without_it_is_permanent_and_not_retried(start):
    handler = Recorder()
    port = start(handler, enable_SMTPUTF8=False)
    sleeps = []
    to_idn = build_message(
        sender="noreply@academy.example",
        to="zoë@bücher.example",
        subject="Hi",
        html="<p>Hi</p>",
        text="Hi",
        message_id="<1@x>",
    )
    with SmtpSender(SmtpSettings(port=port), sleep=sleeps.append) as sender:
        with pytest.raises(PermanentDeliveryError, match="SMTPUTF8"):
            sender.send(to_idn)
        sender.send(msg())  # the connection is still good for the next learner
    assert sleeps == [] and len(handler.messages) == 1 and len(handler.sessions) == 1


def test_unreachable_server_is_unavailable():
    with pytest.raises(ProviderUnavailable, match="cannot connect"):
        SmtpSender(SmtpSettings(port=free_port(), timeout=2)).send(msg())


def test_rate_limit_spaces_sends_evenly():
    now = [100.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    sender = SmtpSender(SmtpSettings(rate_per_second=4), sleep=sleep, clock=lambda: now[0])
    for _ in range(9):
        sender._pace()
    assert sum(slept) == pytest.approx(2.0)  # 9 sends at 4/s: the ninth starts 2 s after the first


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("<https://x.example/u>\r\nBcc: a@b.example", id="line break"),
        pytest.param("<https://exämple.org/u>", id="not ASCII"),
        pytest.param(f"<https://x.example/{'u' * 980}>", id="over 998 on its line"),
    ],
)
def test_a_list_unsubscribe_that_cannot_go_as_one_plain_line_is_refused(value):
    with pytest.raises(ValueError, match="List-Unsubscribe header"):
        build_message(
            sender="noreply@academy.example", to="l1@example.org", subject="Hi", html="<p>Hi</p>",
            text="Hi", message_id="<a@academy.example>", headers={"List-Unsubscribe": value},
        )  # fmt: skip
