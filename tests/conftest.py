import os

from hypothesis import HealthCheck, settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# deadline=None: a 2-core shared machine has noisy timings; max_examples keeps the default run short.
# database=None: derandomized runs need no example database (and the suite writes nothing into the repo).
settings.register_profile("ci", deadline=None, max_examples=25, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", deadline=None, max_examples=300)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def repo_files():
    """Every file in the checkout but git's, caches and virtual environments."""
    found = set()
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in (".git", "__pycache__", ".hypothesis") and not d.startswith(".venv")]
        found.update(os.path.relpath(os.path.join(folder, f), ROOT) for f in files)
    return found


def pytest_sessionstart(session):
    session.config.repo_files_before = repo_files()


def pytest_sessionfinish(session, exitstatus):
    """The suite leaves nothing behind in the repo: a file it created there fails the run."""
    left = sorted(repo_files() - session.config.repo_files_before)
    if left:
        print(f"\nthe test suite left files in the repo: {left}")
        session.exitstatus = 1
