"""Sends GET URL_PREFIX/0 .. URL_PREFIX/{N-1} from N threads at once; exits non-zero if any
request fails. Usage: python_load.py URL_PREFIX N"""
import concurrent.futures
import sys
import urllib.request

PREFIX, N = sys.argv[1], int(sys.argv[2])


def get(i):
    with urllib.request.urlopen(f"{PREFIX}/{i}", timeout=20) as r:
        return r.status


with concurrent.futures.ThreadPoolExecutor(max_workers=N) as pool:
    statuses = list(pool.map(get, range(N)))
bad = [s for s in statuses if s != 200]
sys.exit(1 if bad else 0)
