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
