"""moto's server, one request at a time.

DynamoDB runs each transaction in isolation: two TransactWriteItems whose
conditions read the same item cannot both succeed. moto's own `moto_server`
serves requests on many threads and checks a transaction's conditions without
a lock, so under concurrent requests two such transactions can both pass.
This runs the same application behind one lock, which gives the isolation
DynamoDB documents. Usage: python moto_server.py PORT
"""

import os
import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

port = int(sys.argv[1])
os.environ.setdefault("MOTO_PORT", str(port))
app = DomainDispatcherApplication(create_backend_app)
lock = threading.Lock()


def serialized(environ, start_response):
    with lock:
        return list(app(environ, start_response))


run_simple("127.0.0.1", port, serialized, threaded=True)
