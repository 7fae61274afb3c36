"""A Wine prefix for running the Windows side of relaymesh in tests.

find_wine() locates the 64-bit loader and wineserver (Debian's wine64
package: /usr/lib/wine/wine64, else `wine64` on PATH). WinePrefix makes a
fresh prefix (`wineboot -i`) in a directory of the caller's choosing,
keeps one persistent wineserver running for it (so each program starts in
well under a second), runs Windows programs with extra environment and a
timeout, and registers / unregisters a Simple MAPI DLL with regsvr32.

Every process runs headless and quiet: DISPLAY is removed, WINEDEBUG=-all,
the Mono and Gecko installers are disabled, and the locale is C.UTF-8 so
that Wine reads command lines as UTF-8 and uses its default ANSI code page
(1252).
"""
import os
import shutil
import subprocess
import tempfile
import time

WINE64_CANDIDATES = ("/usr/lib/wine/wine64",)
WINE32_CANDIDATES = ("/usr/lib/wine/wine",)


class WineError(AssertionError):
    pass


def _first_executable(paths, name):
    for p in paths:
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return shutil.which(name) if name else None


def find_wine():
    """(wine64, wineserver) paths; either is None when missing."""
    wine64 = _first_executable(WINE64_CANDIDATES, "wine64")
    server = None
    if wine64:
        sibling = os.path.join(os.path.dirname(wine64), "wineserver")
        if os.access(sibling, os.X_OK):
            server = sibling
    if server is None:
        server = shutil.which("wineserver")
    return wine64, server


def find_wine32():
    """The 32-bit loader (Debian's wine32 package), or None. Only a real
    ELF loader counts: /usr/bin/wine is a script that exists without it."""
    for p in WINE32_CANDIDATES:
        if os.path.isfile(p) and os.access(p, os.X_OK):
            with open(p, "rb") as f:
                if f.read(4) == b"\x7fELF":
                    return p
    return None


def winpath(path):
    """The Windows path of a Unix path (Wine maps / to drive Z:)."""
    return "Z:" + os.path.abspath(path).replace("/", "\\")


class WinePrefix:
    def __init__(self, path, wine64=None, wineserver=None):
        found = find_wine()
        self.wine64 = wine64 or found[0]
        self.wineserver = wineserver or found[1]
        if not self.wine64 or not self.wineserver:
            raise WineError("wine64 / wineserver not found")
        self.path = os.path.abspath(path)
        self.server = None
        self.boot_seconds = None

    # -- environment -------------------------------------------------------
    def env(self, extra=None):
        env = dict(os.environ)
        env.pop("DISPLAY", None)
        env.pop("WAYLAND_DISPLAY", None)
        for k in list(env):
            # a stray RELAYMESH_MAPI_* of the caller must not leak in
            if k.startswith("RELAYMESH_MAPI_"):
                del env[k]
        env.update({
            "WINEPREFIX": self.path,
            "WINEDEBUG": "-all",
            "WINEARCH": "win64",
            "WINEDLLOVERRIDES": "mscoree,mshtml=",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
        })
        if extra:
            env.update({k: str(v) for k, v in extra.items()})
        return env

    # -- lifecycle ---------------------------------------------------------
    def boot(self, timeout=180):
        """Create the prefix (wineboot -i) and start a persistent
        wineserver for it."""
        os.makedirs(self.path, exist_ok=True)
        t0 = time.monotonic()
        r = subprocess.run([self.wine64, "wineboot", "-i"],
                           env=self.env(), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout)
        self.boot_seconds = time.monotonic() - t0
        if r.returncode != 0 or \
                not os.path.isdir(os.path.join(self.path, "drive_c")):
            raise WineError("wineboot -i failed (%d):\n%s"
                            % (r.returncode,
                               r.stderr.decode("utf-8", "replace")[-3000:]))
        # wineboot leaves a server that exits a few seconds after the last
        # process; replace it with one that stays until kill().
        subprocess.run([self.wineserver, "-w"], env=self.env(),
                       timeout=timeout)
        self.server = subprocess.Popen([self.wineserver, "-f", "-p"],
                                       env=self.env(),
                                       stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
        # Start Wine's background services now, detached from any output
        # a test reads, and keep them for the session.
        self.run(["cmd", "/c", "exit"], timeout=timeout)
        return self

    def kill(self):
        """wineserver -k: ends every process of the prefix and the
        server."""
        try:
            subprocess.run([self.wineserver, "-k"], env=self.env(),
                           timeout=30, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            pass
        if self.server is not None:
            try:
                self.server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
            self.server = None

    # -- running programs --------------------------------------------------
    def run(self, argv, env=None, timeout=60, cwd=None, check=False,
            loader=None):
        """Run a Windows program; argv[0] is a Unix path of the .exe or a
        program Wine knows (e.g. "reg"). Returns CompletedProcess with
        stdout / stderr as text (UTF-8, CRLF turned into LF); on timeout
        kills the program and raises WineError."""
        cmd = [loader or self.wine64] + [str(a) for a in argv]
        # Output goes to files, not pipes: the first program of a prefix
        # starts Wine's background services (services.exe, winedevice...),
        # which inherit its handles and outlive it; a pipe would then not
        # see EOF until they exit.
        with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
            proc = subprocess.Popen(cmd, env=self.env(env), cwd=cwd,
                                    stdin=subprocess.DEVNULL, stdout=fo,
                                    stderr=fe)
            try:
                rc = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                fo.seek(0)
                out = fo.read().decode("utf-8", "replace")
                raise WineError("%s timed out after %s s; output so far:\n%s"
                                % (" ".join(cmd[1:]), timeout, out[-6000:]))
            fo.seek(0)
            fe.seek(0)
            out, err = fo.read(), fe.read()
        r = subprocess.CompletedProcess(cmd, rc)
        r.stdout = out.decode("utf-8", "replace").replace("\r\n", "\n")
        r.stderr = err.decode("utf-8", "replace").replace("\r\n", "\n")
        if check and r.returncode != 0:
            raise WineError("%s exited %d\nstdout: %s\nstderr: %s"
                            % (" ".join(cmd[1:]), r.returncode,
                               r.stdout[-4000:], r.stderr[-4000:]))
        return r

    # -- registry ----------------------------------------------------------
    def reg_query(self, key, value=None):
        """`reg query KEY [/v VALUE | /ve]` inside the prefix: the value's
        data as text, or None when the key or value does not exist. value
        "" is the key's default value."""
        argv = ["reg", "query", key]
        if value == "":
            argv.append("/ve")
        elif value is not None:
            argv += ["/v", value]
        r = self.run(argv, timeout=60)
        if r.returncode != 0:
            return None
        if value is None:
            return r.stdout
        for line in r.stdout.splitlines():
            parts = line.strip().split(None, 2)
            name = "(Default)" if value == "" else value
            if len(parts) >= 2 and parts[0].lower() == name.lower() and \
                    parts[1].startswith("REG_"):
                return parts[2] if len(parts) == 3 else ""
        return None

    def register_mail_client(self, dll, name="relaymesh", timeout=60):
        """regsvr32 the DLL (its DllRegisterServer makes it the default
        mail client) and check HKLM\\Software\\Clients\\Mail."""
        r = self.run(["regsvr32", "/s", winpath(dll)], timeout=timeout)
        if r.returncode != 0:
            raise WineError("regsvr32 %s exited %d: %s %s"
                            % (dll, r.returncode, r.stdout, r.stderr))
        default = self.reg_query(r"HKLM\Software\Clients\Mail", "")
        path = self.reg_query(r"HKLM\Software\Clients\Mail\%s" % name,
                              "DLLPath")
        if default != name:
            raise WineError("after regsvr32 the default mail client is %r, "
                            "not %r" % (default, name))
        if path is None or path.lower() != winpath(dll).lower():
            raise WineError("after regsvr32 DLLPath is %r, expected %r"
                            % (path, winpath(dll)))
        return path

    def unregister_mail_client(self, dll, name="relaymesh", timeout=60):
        """regsvr32 /u; afterwards relaymesh is no longer registered."""
        r = self.run(["regsvr32", "/u", "/s", winpath(dll)], timeout=timeout)
        if r.returncode != 0:
            raise WineError("regsvr32 /u %s exited %d: %s %s"
                            % (dll, r.returncode, r.stdout, r.stderr))
        return r
