"""Blocks every network connection but loopback in each Python process started with ``LVERSE_BLOCK_NETWORK=1``
and this folder on ``PYTHONPATH`` (Python imports ``sitecustomize`` at start-up, so notebook kernels and
torchrun workers get it too). The test suite runs the ci pipeline this way (tests/conftest.py, ``ci_pipeline``):
the kit's promise that nothing is downloaded at run time, as a test. Only Python's socket module is guarded;
CI can add ``unshare -n`` where it is available for code that opens sockets in C.
"""
import os

if os.environ.get("LVERSE_BLOCK_NETWORK") == "1":
    import ipaddress
    import socket

    _connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex

    def _check(sock, address):
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return  # unix sockets: local by construction
        host = str(address[0]).split("%")[0]
        try:
            local = ipaddress.ip_address(host).is_loopback
        except ValueError:
            local = host == "localhost"
        if not local:
            raise OSError(f"network access blocked (LVERSE_BLOCK_NETWORK=1, the kit's offline test): connect to "
                          f"{address}; the kit must not use the network at run time")

    def connect(self, address):
        _check(self, address)
        return _connect(self, address)

    def connect_ex(self, address):
        _check(self, address)
        return _connect_ex(self, address)

    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex

if os.environ.get("LVERSE_TEST_BACKGROUND") == "1":
    # The test suite's background run of the ci pipeline (tests/conftest.py, _CiRun): the lowest priority, so it
    # only takes CPU time the tests leave idle. Linux's autogroup scheduling gives each notebook kernel (Jupyter starts
    # it with setsid) a group whose weight nice alone does not lower: a kernel that leads its group lowers it too.
    try:
        os.nice(19 - os.nice(0))
    except OSError:
        pass
    if os.getsid(0) == os.getpid():
        try:
            with open("/proc/self/autogroup", "w") as f:
                f.write("19")
        except OSError:
            pass
