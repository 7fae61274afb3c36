"""A scriptable SMTP server for tests of SMTP clients (aiosmtpd, Debian's
python3-aiosmtpd), in a thread of the test process.

    with SMTPServer(rcpt_codes={"bad@x.test": "550 5.1.1 no"}) as srv:
        ... connect to srv.port ...
    srv.messages   # one Message per accepted DATA

Options (all keyword arguments):
  pipelining, size, smtputf8, dsn, eightbitmime: offer the extension
      (size: the SIZE number, 0/None: no SIZE);
  starttls: offer STARTTLS with a self-signed certificate (made with the
      openssl command line tool in `certdir`, default a temporary dir);
  ehlo_code: answer EHLO with this reply instead (e.g. "502 5.5.2 no"),
      so the client must fall back to HELO;
  mail_code / data_code / dot_code: the reply to MAIL / to DATA (instead
      of 354) / after the final "." (instead of 250);
  rcpt_codes: {address: reply} per recipient (others get 250);
  auth_users: {user: password}: offer AUTH (after STARTTLS) and check
      logins against it (`logins` records the users that succeeded);
  close_in: "mail" | "rcpt" | "data" (after 354) — drop the connection;
  stall_in: "greeting" | "ehlo" | "mail" | "rcpt" | "data" | "dot" —
      never answer that step (until the server stops).

Recorded: `messages` (Message: mail_from, rcpt_tos, mail_options,
rcpt_options (list per accepted recipient), content (bytes), conn (an id
per connection), tls (bool)), `connections` (that sent a command),
`commands`
(every command line, decoded, in order, per connection id).
"""
import asyncio
import itertools
import os
import shutil
import ssl
import tempfile
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from helpers.tls import make_cert

DSN_KEYS = ("NOTIFY", "ORCPT", "RET", "ENVID")


class Message:
    def __init__(self, env, conn, tls):
        self.mail_from = env.mail_from
        self.rcpt_tos = list(env.rcpt_tos)
        self.mail_options = list(env.mail_options)
        self.rcpt_options = list(getattr(env, "rcpt_opts_each", []))
        self.content = env.original_content or env.content
        self.conn = conn
        self.tls = tls

    def __repr__(self):
        return "Message(from=%r to=%r mail_options=%r rcpt_options=%r)" % (
            self.mail_from, self.rcpt_tos, self.mail_options,
            self.rcpt_options)


class _Handler:
    def __init__(self, srv):
        self.srv = srv

    async def _stall(self, step):
        if self.srv.opts.get("stall_in") == step:
            await asyncio.sleep(3600)

    async def handle_EHLO(self, server, session, envelope, hostname,
                          responses):
        o = self.srv.opts
        await self._stall("ehlo")
        if o.get("ehlo_code"):
            session.host_name = None
            session.extended_smtp = False
            return [o["ehlo_code"]]
        session.host_name = hostname  # the 5-argument hook must set it
        out = [responses[0]]
        if o.get("pipelining", True):
            out.append("250-PIPELINING")
        for r in responses[1:-1]:
            kw = r[4:].split(" ")[0].upper()
            if kw == "SIZE" and not o.get("size"):
                continue
            if kw == "8BITMIME" and not o.get("eightbitmime", True):
                continue
            out.append(r)
        if o.get("dsn", True):
            out.append("250-DSN")
        out.append("250-ENHANCEDSTATUSCODES")
        out.append("250 HELP")
        return out

    async def handle_MAIL(self, server, session, envelope, address,
                          mail_options):
        await self._stall("mail")
        if self.srv.opts.get("close_in") == "mail":
            server.transport.close()
            return "421 closing"
        code = self.srv.opts.get("mail_code")
        if code:
            return code
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.rcpt_opts_each = []
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address,
                          rcpt_options):
        await self._stall("rcpt")
        if self.srv.opts.get("close_in") == "rcpt":
            server.transport.close()
            return "421 closing"
        code = self.srv.opts.get("rcpt_codes", {}).get(address)
        if code:
            return code
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        envelope.rcpt_opts_each.append(list(rcpt_options))
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        await self._stall("dot")
        self.srv.messages.append(
            Message(envelope, server._conn_id, server._tls_protocol is not None))
        return self.srv.opts.get("dot_code") or "250 2.0.0 OK queued"


class _SMTP(SMTP):
    """aiosmtpd's SMTP with the hooks aiosmtpd has no option for."""

    def __init__(self, handler, srv, **kw):
        super().__init__(handler, **kw)
        self._srv = srv
        self._conn_id = None

    def connection_made(self, transport):
        # STARTTLS calls this again for the TLS transport: same connection
        if self._conn_id is None:
            self._conn_id = next(self._srv._ids)
        super().connection_made(transport)

    async def push(self, status):
        if self.transport is None or self.transport.is_closing():
            return
        await super().push(status)

    async def _handle_client(self):
        if self._srv.opts.get("stall_in") == "greeting":
            await asyncio.sleep(3600)
        await super()._handle_client()

    def _getparams(self, params):
        d = super()._getparams(params)
        if d is not None and self._srv.opts.get("dsn", True):
            for k in DSN_KEYS:
                d.pop(k, None)
        return d

    async def smtp_STARTTLS(self, arg):
        self._srv.commands.append((self._conn_id, "STARTTLS"))
        await super().smtp_STARTTLS(arg)

    async def smtp_EHLO(self, hostname):
        self._srv.commands.append((self._conn_id, "EHLO " + (hostname or "")))
        await super().smtp_EHLO(hostname)

    async def smtp_HELO(self, hostname):
        self._srv.commands.append((self._conn_id, "HELO " + (hostname or "")))
        await super().smtp_HELO(hostname)

    async def smtp_RSET(self, arg):
        self._srv.commands.append((self._conn_id, "RSET"))
        await super().smtp_RSET(arg)

    async def smtp_MAIL(self, arg):
        self._srv.commands.append((self._conn_id, "MAIL " + (arg or "")))
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg):
        self._srv.commands.append((self._conn_id, "RCPT " + (arg or "")))
        await super().smtp_RCPT(arg)

    async def smtp_DATA(self, arg):
        o = self._srv.opts
        self._srv.commands.append((self._conn_id, "DATA"))
        if o.get("stall_in") == "data":
            await asyncio.sleep(3600)
        if o.get("data_code") and self.envelope.rcpt_tos:
            await self.push(o["data_code"])
            return
        if o.get("close_in") == "data" and self.envelope.rcpt_tos:
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            await asyncio.sleep(0.2)  # let some of the message arrive
            self.transport.close()
            return
        await super().smtp_DATA(arg)


class _Controller(Controller):
    def __init__(self, srv, **kw):
        self._srv = srv
        super().__init__(_Handler(srv), **kw)

    def factory(self):
        return _SMTP(self.handler, self._srv, **self.SMTP_kwargs)

    def _trigger_server(self):
        # aiosmtpd reads the greeting here, which a stalling server never
        # sends: connecting is enough to have factory() called.
        import socket
        socket.create_connection((self.hostname, self.port), 1.0).close()


class SMTPServer:
    def __init__(self, host="127.0.0.1", port=0, certdir=None, **opts):
        self.opts = opts
        self.messages = []
        self.commands = []
        self.logins = []
        self._ids = itertools.count(1)
        self._tmp = None
        kw = dict(enable_SMTPUTF8=opts.get("smtputf8", True),
                  data_size_limit=opts.get("size") or None,
                  ident="sink.test ESMTP test",
                  auth_require_tls=True)
        if opts.get("auth_users") is not None:
            kw["authenticator"] = self._authenticate
        if opts.get("starttls"):
            if certdir is None:
                self._tmp = certdir = tempfile.mkdtemp(prefix="smtpsrv")
            cert = os.path.join(certdir, "srv.crt")
            key = os.path.join(certdir, "srv.key")
            make_cert(cert, key, "sink.test")
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            kw["tls_context"] = ctx
        if port == 0:
            import socket
            s = socket.socket()
            s.bind((host, 0))
            port = s.getsockname()[1]
            s.close()
        self.host, self.port = host, port
        self._ctl = _Controller(self, hostname=host, port=port,
                                server_hostname="sink.test", **kw)

    def start(self):
        self._ctl.start()
        return self

    def stop(self):
        try:
            self._ctl.stop()
        finally:
            if self._tmp:
                shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult
        user = auth_data.login.decode()
        ok = self.opts["auth_users"].get(user) == auth_data.password.decode()
        if ok:
            self.logins.append(user)
        # handled=False: aiosmtpd then sends the 535 itself
        return AuthResult(success=ok, handled=False)

    @property
    def connections(self):
        """Connections that sent at least one command."""
        return len({i for i, _ in self.commands})

    def conn_commands(self, conn=None):
        """Commands of one connection (default: the first that sent any)."""
        if conn is None:
            conn = self.commands[0][0] if self.commands else None
        return [c for i, c in self.commands if i == conn]
