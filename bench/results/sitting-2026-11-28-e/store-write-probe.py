import atexit, os, threading, time, signal
OUT = os.environ.get("PROBE5_OUT")
if OUT and "run.py" in " ".join(__import__("sys").argv):
    T = {}
    lock = threading.Lock()
    def add(name, cpu):
        with lock:
            n, c = T.get(name, (0, 0))
            T[name] = (n + 1, c + cpu)
    def install():
        import storage.store as S, peewee as pw
        ow = S.Store.write
        def write(self, fn):
            c0 = time.thread_time_ns()
            try:
                return ow(self, fn)
            finally:
                add("Store.write", time.thread_time_ns() - c0)
        S.Store.write = write
        oc = pw.SqliteDatabase.commit
        def commit(self):
            c0 = time.thread_time_ns()
            try:
                return oc(self)
            finally:
                add("commit", time.thread_time_ns() - c0)
        pw.SqliteDatabase.commit = commit
    def dump(*_):
        with open(OUT + f".{os.getpid()}", "w") as f:
            for k, (n, c) in T.items():
                f.write(f"{k} {n} {c/1e6:.1f}ms\n")
            f.write(f"process_cpu {time.process_time()*1000:.0f}ms\n")
            t = os.times()
            f.write(f"user {t.user*1000:.0f}ms sys {t.system*1000:.0f}ms\n")
            for line in open(f"/proc/{os.getpid()}/status"):
                if "ctxt_switches" in line:
                    f.write(line.replace(":", "").replace("\t", " ").strip() + "\n")
    threading.Timer(0.5, install).start()
    atexit.register(dump)
    prev = signal.getsignal(signal.SIGTERM)
if OUT and "run.py" in " ".join(__import__("sys").argv) and os.environ.get("PROBE5_SQL"):
    import re as _re
    def install_sql():
        import peewee as pw
        oe = pw.Database.execute_sql
        def execute_sql(self, sql, params=None, *a, **k):
            c0 = time.thread_time_ns()
            try:
                return oe(self, sql, params, *a, **k)
            finally:
                m = _re.match(r'\s*(\w+(?: OR \w+)?)\s+(?:INTO\s+)?(?:FROM\s+)?"?(\w+)"?', sql)
                key = ("SQL " + (m.group(1) + " " + m.group(2) if m else sql[:30])).replace(" ", "_")
                add(key, time.thread_time_ns() - c0)
        pw.Database.execute_sql = execute_sql
    threading.Timer(0.6, install_sql).start()
