"""Peak memory under a flood of maximal embed jobs (issue 9, item 6): N jobs of 1024 one-letter
texts, dim 384 (test-hash backend: the queue and result path alone), JSON results of about 6 MiB
each. Prints the engine's steady RSS after a warm-up, its peak RSS (VmHWM) after the flood, and
Redis's peak memory (which holds the results the producer asked for).
Usage: WEAVER_BIN=build-test/weaver-engine python3 bench/queue/flood_memory.py [N=256]
(a build with -DWEAVER_TEST_BACKENDS=ON)."""
import os, sys, time, json
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "../../tests/integration"))
from conftest import RedisServer, Engine, write_config, xadd_jobs, wait_for
import tempfile
d = tempfile.mkdtemp()
srv = RedisServer(d); srv.start(); r = srv.client()
cfg = write_config(os.path.join(d, "f.conf"), srv.port, embedder={"backend": "test-hash", "dim": 384})
eng = Engine(cfg).start()
def mem():
    st = open("/proc/%d/status" % eng.proc.pid).read()
    return {l.split(":")[0]: int(l.split()[1]) // 1024 for l in st.splitlines() if l.startswith(("VmRSS", "VmHWM"))}
job = lambda i: {"id": "f%d" % i, "texts": ["a"] * 1024, "reply_to": "done"}
xadd_jobs(r, "embed", [job(i) for i in range(4)])
wait_for(lambda: r.llen("done") == 4, what="warm")
steady = mem()
N = int(sys.argv[1]) if len(sys.argv) > 1 else 256
t = time.time()
xadd_jobs(r, "embed", [job(i) for i in range(4, 4 + N)])
wait_for(lambda: r.llen("done") == 4 + N, timeout=600, what="flood")
m = mem()
print("flood of %d maximal jobs in %.1f s: engine RSS steady %d MiB, peak %d MiB (+%d); redis peak %d MiB"
      % (N, time.time() - t, steady["VmRSS"], m["VmHWM"], m["VmHWM"] - steady["VmRSS"], r.info("memory")["used_memory_peak"] // 2**20))
eng.stop(); srv.stop()
