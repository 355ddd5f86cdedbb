"""Unmodified third-party asyncore code on fastcore, through fastcore.install().

pyftpdlib subclasses asynchat.async_chat and asyncore.dispatcher for its
control and data channels and drives them with its own poller. The server
runs in a thread of a subprocess (install() replaces sys.modules entries);
the stdlib's ftplib is the client.
"""

import pytest
import support

pytestmark = pytest.mark.fastcore_only

FTP_SESSION = r'''
import hashlib, io, os, sys, tempfile, threading, ftplib
import fastcore
fastcore.install()
import asynchat, asyncore
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer

assert asyncore is fastcore.asyncore and asynchat is fastcore.asynchat
root = tempfile.mkdtemp()
payload = os.urandom(3 << 20)
with open(os.path.join(root, "blob.bin"), "wb") as f:
    f.write(payload)
authorizer = DummyAuthorizer()
authorizer.add_user("user", "secret", root, perm="elradfmw")
handler = type("Handler", (FTPHandler,), {"authorizer": authorizer})
server = FTPServer(("127.0.0.1", 0), handler)
thread = threading.Thread(target=server.serve_forever, kwargs={"timeout": 0.1}, daemon=True)
thread.start()

ftp = ftplib.FTP()
ftp.connect("127.0.0.1", server.address[1], timeout=20)
ftp.login("user", "secret")
names = ftp.nlst()
received = io.BytesIO()
ftp.retrbinary("RETR blob.bin", received.write)
ftp.storbinary("STOR up.bin", io.BytesIO(payload[:1000000]))
stored = ftp.size("up.bin")
ftp.quit()
server.close_all()
thread.join(10)
print(names, received.getvalue() == payload, stored, fastcore.EXTENSION)
'''


def test_pyftpdlib_serves_over_fastcore(fastcore_pkg):
    pytest.importorskip("pyftpdlib")
    result = support.run_python(["-c", FTP_SESSION], timeout=90)
    assert result.returncode == 0, result.stderr
    names, intact, stored, extension = result.stdout.split()[-4:]
    assert names == "['blob.bin']"
    assert intact == "True"
    assert stored == "1000000"
    assert extension == str(fastcore_pkg.EXTENSION)
