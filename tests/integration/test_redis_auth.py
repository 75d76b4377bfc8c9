"""Redis credentials come from a file or the environment, never from the config text."""
import os
import subprocess

from conftest import Engine, RedisServer, run_cli, wait_for, write_config, xadd_jobs


def start_protected(workdir):
    srv = RedisServer(workdir)
    srv.proc = subprocess.Popen(
        ["redis-server", "--port", str(srv.port), "--bind", "127.0.0.1", "--dir", workdir, "--save", "",
         "--requirepass", "s3cret", "--user", "worker", "on", ">w0rker", "~*", "&*", "+@all"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis
    wait_for(lambda: _ping(redis.Redis(port=srv.port, password="s3cret")), what="protected redis")
    return srv


def _ping(r):
    try:
        return r.ping()
    except Exception:
        return False


def test_password_from_file_and_acl_user_and_environment(workdir):
    srv = start_protected(workdir)
    try:
        secret = os.path.join(workdir, "redis.pass")
        with open(secret, "w") as f:
            f.write("w0rker\n")
        cfg = write_config(os.path.join(workdir, "acl.conf"), srv.port,
                           redis={"username": "worker", "password_file": secret})
        eng = Engine(cfg).start()
        out = run_cli("enqueue", "embed", "--text", "authenticated", "--wait", "--timeout", "20", config=cfg)
        assert out.returncode == 0 and '"status":"ok"' in out.stdout
        assert "w0rker" not in eng.read_log()
        assert eng.stop() == 0

        env_cfg = write_config(os.path.join(workdir, "env.conf"), srv.port)
        env_eng = Engine(env_cfg, env={"WEAVER_REDIS_PASSWORD": "s3cret"}).start()
        assert env_eng.stop() == 0

        wrong = write_config(os.path.join(workdir, "none.conf"), srv.port, redis={"startup_deadline_ms": 300})
        e = Engine(wrong, env={"WEAVER_REDIS_PASSWORD": ""}).start(wait_ready=False)
        assert e.proc.wait(timeout=20) == 69
        assert "NOAUTH" in e.read_log() or "Authentication required" in e.read_log()
    finally:
        srv.stop()


# The engine's user as docs/operations.md writes it for prefix "it", replies also under
# "app:replies:*" and targets under "vec:*": the ACL enforces the same namespaces as the engine.
ENGINE_ACL = ["weaver", "on", ">engine-pass", "resetkeys", "~it:*", "~app:replies:*", "~vec:*", "resetchannels",
              "-@all", "+@read", "+@write", "+@stream", "+@scripting", "+@connection", "+@keyspace",
              "-@dangerous", "+info"]


def test_the_engine_runs_under_its_documented_acl_and_a_denied_key_cannot_jam_it(workdir):
    import redis
    srv = RedisServer(workdir)
    srv.proc = subprocess.Popen(
        ["redis-server", "--port", str(srv.port), "--bind", "127.0.0.1", "--dir", workdir, "--save", "",
         "--user", "default", "on", "nopass", "~*", "&*", "+@all", "--user"] + ENGINE_ACL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: _ping(redis.Redis(port=srv.port)), what="redis with ACL users")
    r = redis.Redis(port=srv.port)
    try:
        secret = os.path.join(workdir, "engine.pass")
        with open(secret, "w") as f:
            f.write("engine-pass\n")
        os.chmod(secret, 0o600)
        # "denied:*" is allowed by the engine's config but not by its ACL: a misconfiguration whose
        # writes Redis refuses. Such a result must not jam the worker: it is isolated, written as
        # an error result under the engine's own keys, and the rest of the batch is untouched.
        cfg = write_config(os.path.join(workdir, "acl-engine.conf"), srv.port,
                           redis={"username": "weaver", "password_file": secret},
                           queue={"reply_patterns": "app:replies:* denied:*", "target_patterns": "vec:*"})
        eng = Engine(cfg).start()
        xadd_jobs(r, "embed", [
            {"id": "ok1", "text": "a", "reply_to": "app:replies:1", "target": {"key": "vec:1", "field": "v"}},
            {"id": "bad", "text": "b", "reply_to": "denied:1"},
            {"id": "ok2", "text": "c", "reply_to": "it:reply:2"},
        ])
        wait_for(lambda: r.llen("app:replies:1") == 1 and r.llen("it:reply:2") == 1, what="the allowed jobs")
        assert len(r.hget("vec:1", "v")) == 32
        wait_for(lambda: r.exists("it:result:bad"), timeout=30, what="the denied job's error result")
        bad = r.hgetall("it:result:bad")
        assert bad[b"status"] == b"error" and b"NOPERM" in bad[b"error"].upper()
        assert not r.exists("denied:1")
        assert r.xpending("it:jobs:embed", "weaver")["pending"] == 0
        assert eng.stop(timeout=15) == 0
    finally:
        srv.stop()
