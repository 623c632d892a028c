"""The appointment book's service functions on a busy diary: free slots, booking, and a race.

    python -m bench.bench_appointments [--admin-url postgresql://127.0.0.1:5432/test] [--sqlite]

On a throwaway database (PostgreSQL next to the admin URL's, or an SQLite file with `--sqlite`),
migrated, one business with capacity 3, open Sunday-Thursday 09:00-19:00 on a 15-minute grid, and
about 1,500 appointments booked over the next 60 days (through `book()`, seats and all). Then it
times, in this process:

    find_slots   one day, and 14 days, of a 30-minute service
    book         a free start on a random day (the seat read, the savepoint insert, the commit)
    race         16 threads, each with its own connection, booking the one free seat left at a time

and prints p50/p95 (ms) and the race's outcome (exactly one winner) and wall time. The database is
dropped at the end.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from server import appointments
from server.db.engine import Database
from server.db.migrate import run_migrations
from server.db.models import Business
from server.errors import DomainError

ZONE = ZoneInfo("Asia/Jerusalem")
DAYS_AHEAD = 60
CONTENDERS = 16


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return f"p50 {statistics.median(ordered):6.1f} ms   p95 {p95:6.1f} ms   (n={len(ordered)})"


def set_up(db: Database) -> tuple[int, int]:
    with db.scope() as session:
        business = Business(name="Bench Salon", timezone="Asia/Jerusalem", features={})
        session.add(business)
        session.flush()
        appointments.update_book(session, business.id, {"capacity": 3, "slot_minutes": 15})
        appointments.set_weekly_hours(
            session, business.id, [{"weekday": d, "opens": "09:00", "closes": "19:00"} for d in range(5)]
        )
        service = appointments.create_service(session, business.id, {"name": "תספורת", "duration_minutes": 30})
        return business.id, service.id


def first_day() -> date:
    return datetime.now(ZONE).date() + timedelta(days=2)


def fill(db: Database, business_id: int, service_id: int, rng: random.Random) -> int:
    booked = 0
    for offset in range(DAYS_AHEAD):
        day = first_day() + timedelta(days=offset)
        with db.scope() as session:
            free = appointments.find_slots(session, business_id, service_id, day)
        for start in rng.sample(free, min(len(free), 35)):
            session = db.sessions()
            try:
                appointments.book(
                    session, business_id, service_id=service_id, start=start, source="call", phone=_phone(rng)
                )
                booked += 1
            except DomainError:
                pass
            finally:
                session.close()
    return booked


def _phone(rng: random.Random) -> str:
    return "05" + "".join(rng.choice("0123456789") for _ in range(8))


def time_slots(db: Database, business_id: int, service_id: int, rng: random.Random) -> None:
    one_day, two_weeks = [], []
    for _ in range(60):
        day = first_day() + timedelta(days=rng.randrange(DAYS_AHEAD - 14))
        with db.scope() as session:
            started = time.perf_counter()
            appointments.find_slots(session, business_id, service_id, day)
            one_day.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            appointments.find_slots(session, business_id, service_id, (day, day + timedelta(days=13)))
            two_weeks.append((time.perf_counter() - started) * 1000)
    print(f"find_slots, one day     {percentiles(one_day)}")
    print(f"find_slots, 14 days     {percentiles(two_weeks)}")


def time_book(db: Database, business_id: int, service_id: int, rng: random.Random) -> None:
    samples = []
    while len(samples) < 100:
        day = first_day() + timedelta(days=rng.randrange(DAYS_AHEAD))
        with db.scope() as session:
            free = appointments.find_slots(session, business_id, service_id, day)
        if not free:
            continue
        session = db.sessions()
        try:
            started = time.perf_counter()
            appointments.book(
                session, business_id, service_id=service_id, start=rng.choice(free), source="console", phone=_phone(rng)
            )
            samples.append((time.perf_counter() - started) * 1000)
        finally:
            session.close()
    print(f"book                    {percentiles(samples)}")


def race(db: Database, business_id: int, service_id: int, rng: random.Random) -> None:
    """Fill a start up to one free seat, then let CONTENDERS threads book it at once."""
    day = first_day() + timedelta(days=DAYS_AHEAD + 7)
    while (day.weekday() + 1) % 7 > 4:
        day += timedelta(days=1)
    start = datetime.combine(day, datetime.min.time().replace(hour=12), ZONE)
    for _ in range(2):
        session = db.sessions()
        try:
            appointments.book(
                session, business_id, service_id=service_id, start=start, source="call", phone=_phone(rng)
            )
        finally:
            session.close()
    barrier = threading.Barrier(CONTENDERS)
    outcomes: list[str] = []
    lock = threading.Lock()

    def contend() -> None:
        session = db.sessions()
        try:
            barrier.wait(10)
            appointments.book(
                session, business_id, service_id=service_id, start=start, source="whatsapp", phone=_phone(rng)
            )
            outcome = "booked"
        except DomainError as exc:
            outcome = exc.code
        finally:
            session.close()
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=contend) for _ in range(CONTENDERS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    wall = (time.perf_counter() - started) * 1000
    counts = {name: outcomes.count(name) for name in sorted(set(outcomes))}
    print(f"race for the last seat  {CONTENDERS} threads: {counts} in {wall:.0f} ms (want exactly one 'booked')")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin-url", default="postgresql+psycopg2://127.0.0.1:5432/test")
    parser.add_argument("--sqlite", action="store_true", help="an SQLite file instead of PostgreSQL")
    args = parser.parse_args()
    rng = random.Random(7)
    admin = None
    if args.sqlite:
        url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='bench-appointments-')) / 'bench.db'}"
    else:
        admin = sa.create_engine(args.admin_url, isolation_level="AUTOCOMMIT")
        name = f"bench_appointments_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = args.admin_url.rsplit("/", 1)[0] + "/" + name
    try:
        db = Database(url, pool_size=CONTENDERS + 2)
        run_migrations(db.engine)
        business_id, service_id = set_up(db)
        started = time.perf_counter()
        booked = fill(db, business_id, service_id, rng)
        print(f"{db.engine.dialect.name}: {booked} appointments booked in {time.perf_counter() - started:.1f} s")
        time_slots(db, business_id, service_id, rng)
        time_book(db, business_id, service_id, rng)
        race(db, business_id, service_id, rng)
        db.engine.dispose()
    finally:
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
