"""The appointment book's service (server/appointments/): slots against hours, exceptions, durations,
capacity, DST and the past; booking races decided by the database; cancel and an atomic move; bad
input and another business's data. On SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import date, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from server import appointments
from server.db.models import Appointment, AppointmentSeat
from server.errors import DomainError, Problem
from tests.appointments_support import ZONE, local, next_weekday, set_up_book
from tests.conftest import create_tenant

LONG_AGO = datetime(2020, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def book(db, tenant):
    return set_up_book(db, tenant.business_id)


def slots(db, book, day, service=None, **kwargs):
    with db.scope() as session:
        found = appointments.find_slots(session, book.business_id, service or book.haircut, day, **kwargs)
    return [slot.astimezone(ZONE).strftime("%H:%M") for slot in found]


def do_book(db, book, start, *, service=None, phone="0501234567", **kwargs):
    with db.scope() as session:
        return appointments.book(
            session,
            book.business_id,
            service_id=service or book.haircut,
            start=start,
            source="console",
            phone=phone,
            name="דנה",
            **kwargs,
        )


def error_of(fn, *args, **kwargs) -> DomainError:
    with pytest.raises(DomainError) as caught:
        fn(*args, **kwargs)
    return caught.value


# ---- slots ---------------------------------------------------------------------------------------
def test_slots_follow_the_opening_hours_and_the_duration(db, book):
    sunday = next_weekday(0)
    haircut = slots(db, book, sunday)
    assert haircut[0] == "09:00" and haircut[-1] == "16:30" and len(haircut) == 16
    color = slots(db, book, sunday, service=book.color)
    assert color[0] == "09:00" and color[-1] == "15:30"  # 90 minutes must end by 17:00
    assert slots(db, book, next_weekday(6)) == []  # Saturday: closed


def test_split_days_and_exceptions(db, book):
    sunday, monday = next_weekday(0), next_weekday(1)
    with db.scope() as session:
        appointments.set_weekly_hours(
            session,
            book.business_id,
            [
                {"weekday": 0, "opens": "09:00", "closes": "10:00"},
                {"weekday": 0, "opens": "16:00", "closes": "17:00"},
                {"weekday": 1, "opens": "09:00", "closes": "17:00"},
            ],
        )
        appointments.set_exception(session, book.business_id, monday.isoformat(), {"closed": True, "note": "חג"})
    assert slots(db, book, sunday) == ["09:00", "09:30", "16:00", "16:30"]
    assert slots(db, book, monday) == []
    with db.scope() as session:
        appointments.set_exception(
            session, book.business_id, monday.isoformat(), {"closed": False, "opens": "12:00", "closes": "13:00"}
        )
    assert slots(db, book, monday) == ["12:00", "12:30"]
    with db.scope() as session:
        appointments.delete_exception(session, book.business_id, monday.isoformat())
    assert len(slots(db, book, monday)) == 16


def test_capacity_lets_appointments_overlap_up_to_the_staff(db, tenant):
    book = set_up_book(db, tenant.business_id, capacity=2)
    sunday = next_weekday(0)
    do_book(db, book, local(sunday, "10:00"), phone="0501111111")
    assert "10:00" in slots(db, book, sunday)
    do_book(db, book, local(sunday, "10:00"), phone="0502222222")
    free = slots(db, book, sunday)
    assert "10:00" not in free and "09:30" in free and "10:30" in free
    # A 90-minute colour from 09:00 would overlap the two at 10:00: not offered.
    assert "09:00" not in slots(db, book, sunday, service=book.color)


def test_the_past_is_not_offered(db, book):
    sunday = next_weekday(0)
    noon = local(sunday, "12:00")
    free = slots(db, book, sunday, now=noon + timedelta(minutes=1))
    assert free[0] == "12:30"
    assert slots(db, book, sunday, now=noon)[0] == "12:00"


def test_a_dst_day_has_its_true_length(db, book):
    # Israel: 2026-03-27 02:00 → 03:00 (a 23-hour Friday), 2026-10-25 02:00 → 01:00 (a 25-hour Sunday).
    with db.scope() as session:
        appointments.update_book(session, book.business_id, {"slot_minutes": 60})
        for day in ("2026-03-27", "2026-10-25"):
            appointments.set_exception(
                session, book.business_id, day, {"closed": False, "opens": "00:00", "closes": "04:00"}
            )
    with db.scope() as session:
        spring = appointments.find_slots(session, book.business_id, book.haircut, date(2026, 3, 27), now=LONG_AGO)
        autumn = appointments.find_slots(session, book.business_id, book.haircut, date(2026, 10, 25), now=LONG_AGO)
    assert [s.astimezone(ZONE).strftime("%H:%M%z") for s in spring] == ["00:00+0200", "01:00+0200", "03:00+0300"]
    assert [s.astimezone(ZONE).strftime("%H:%M%z") for s in autumn] == [
        "00:00+0300",
        "01:00+0300",
        "01:00+0200",
        "02:00+0200",
        "03:00+0200",
    ]
    # Summer time: 09:00 in Jerusalem is 06:00 UTC; winter: 07:00 UTC.
    with db.scope() as session:
        summer = appointments.find_slots(session, book.business_id, book.haircut, date(2026, 7, 5), now=LONG_AGO)
        winter = appointments.find_slots(session, book.business_id, book.haircut, date(2026, 1, 4), now=LONG_AGO)
    assert summer[0] == datetime(2026, 7, 5, 6, tzinfo=timezone.utc)
    assert winter[0] == datetime(2026, 1, 4, 7, tzinfo=timezone.utc)


def test_a_range_of_days(db, book):
    sunday = next_weekday(0)
    with db.scope() as session:
        week = appointments.find_slots(session, book.business_id, book.haircut, (sunday, sunday + timedelta(days=6)))
    assert len(week) == 5 * 16
    assert week == sorted(week)


# ---- booking -------------------------------------------------------------------------------------
def test_book_holds_the_time_and_cancel_frees_it(db, book):
    sunday = next_weekday(0)
    booked = do_book(db, book, local(sunday, "10:00").isoformat(), notes="first visit")
    assert booked.appointment.status == "booked" and booked.customer.phone == "+972501234567"
    assert booked.appointment.ends_at - booked.appointment.starts_at == timedelta(minutes=30)
    assert "10:00" not in slots(db, book, sunday)
    taken = error_of(do_book, db, book, local(sunday, "10:00"), phone="0507654321")
    assert taken.problem is Problem.CONFLICT and taken.code == "slot_taken"
    assert taken.details["alternatives"][:2] == [local(sunday, "09:30").isoformat(), local(sunday, "10:30").isoformat()]
    with db.scope() as session:
        cancelled = appointments.cancel(session, book.business_id, booked.appointment.id)
    assert cancelled.appointment.status == "cancelled"
    assert "10:00" in slots(db, book, sunday)
    with db.scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(AppointmentSeat)) == 0
    do_book(db, book, local(sunday, "10:00"), phone="0507654321")


def test_overlapping_durations_collide(db, book):
    sunday = next_weekday(0)
    do_book(db, book, local(sunday, "10:00"), service=book.color)  # 10:00-11:30
    error = error_of(do_book, db, book, local(sunday, "11:00"))
    assert error.code == "slot_taken"
    do_book(db, book, local(sunday, "11:30"))  # touching is not overlapping


def test_move_is_atomic(db, book):
    sunday = next_weekday(0)
    first = do_book(db, book, local(sunday, "10:00"))
    do_book(db, book, local(sunday, "12:00"), phone="0507654321")
    with db.scope() as session:
        error = error_of(
            appointments.move, session, book.business_id, first.appointment.id, start=local(sunday, "12:00")
        )
    assert error.code == "slot_taken" and error.details["alternatives"]
    with db.scope() as session:
        kept = session.get(Appointment, first.appointment.id)
        assert kept.starts_at == local(sunday, "10:00") and kept.revision == 0
        held = session.scalar(sa.select(sa.func.count()).where(AppointmentSeat.appointment_id == first.appointment.id))
        assert held == 6  # 30 minutes of 5-minute units: the old seats are still held
    assert "10:00" not in slots(db, book, sunday)
    # A move that overlaps its own old time works (its own seats are given back first).
    with db.scope() as session:
        moved = appointments.move(session, book.business_id, first.appointment.id, start=local(sunday, "10:15"))
    assert moved.appointment.starts_at == local(sunday, "10:15") and moved.appointment.revision == 1
    free = slots(db, book, sunday)
    assert "10:00" not in free and "10:30" not in free and "11:00" in free
    with db.scope() as session:
        appointments.cancel(session, book.business_id, first.appointment.id)
        error = error_of(
            appointments.move, session, book.business_id, first.appointment.id, start=local(sunday, "14:00")
        )
    assert error.code == "not_booked"


def test_bad_input_is_refused(db, book, other_tenant):
    sunday = next_weekday(0)
    other = set_up_book(db, other_tenant.business_id)
    cases = [
        (dict(start=local(sunday, "10:00"), service=999_999), Problem.NOT_FOUND, "not_found"),
        (dict(start=local(sunday, "10:00"), service=other.haircut), Problem.NOT_FOUND, "not_found"),
        (dict(start=local(sunday, "10:00") - timedelta(days=60)), Problem.UNPROCESSABLE, "in_the_past"),
        (dict(start="tomorrow at ten"), Problem.INVALID, "invalid_field"),
        (dict(start=f"{sunday}T10:00:00"), Problem.INVALID, "invalid_field"),  # no offset
        (dict(start=local(sunday, "10:03")), Problem.INVALID, "invalid_field"),
        (dict(start=local(sunday, "08:30")), Problem.UNPROCESSABLE, "outside_opening_hours"),
        (dict(start=local(sunday, "16:45")), Problem.UNPROCESSABLE, "outside_opening_hours"),  # ends 17:15
        (dict(start=local(sunday, "10:00"), phone="not a phone"), Problem.INVALID, "invalid_field"),
    ]
    for kwargs, problem, code in cases:
        service = kwargs.pop("service", None)
        start = kwargs.pop("start")
        error = error_of(do_book, db, book, start, service=service, **kwargs)
        assert (error.problem, error.code) == (problem, code), (kwargs, start, error.message)
    with db.scope() as session:
        error = error_of(
            appointments.book,
            session,
            book.business_id,
            service_id=book.haircut,
            start=local(sunday, "10:00"),
            source="fax",
            phone="0501234567",
        )
        assert error.field == "source"
    # Another business's appointment and customer are not found.
    theirs = do_book(db, other, local(sunday, "10:00"))
    with db.scope() as session:
        for fn, kwargs in (
            (appointments.cancel, {}),
            (appointments.move, {"start": local(sunday, "11:00")}),
        ):
            assert error_of(fn, session, book.business_id, theirs.appointment.id, **kwargs).problem is Problem.NOT_FOUND
        error = error_of(
            appointments.book,
            session,
            book.business_id,
            service_id=book.haircut,
            start=local(sunday, "10:00"),
            source="call",
            customer_id=theirs.customer.id,
        )
        assert error.problem is Problem.NOT_FOUND
    with db.scope() as session:
        assert appointments.list_appointments(session, book.business_id, sunday) == []
    # Settings: malformed hours, exceptions and services.
    with db.scope() as session:
        for hours in (
            [{"weekday": 7, "opens": "09:00", "closes": "10:00"}],
            [{"weekday": 0, "opens": "10:00", "closes": "09:00"}],
            [{"weekday": 0, "opens": "9:00", "closes": "10:00"}],
            [{"weekday": 0, "opens": "09:00", "closes": "12:00"}, {"weekday": 0, "opens": "11:00", "closes": "13:00"}],
            "09:00-17:00",
        ):
            assert error_of(appointments.set_weekly_hours, session, book.business_id, hours).problem is Problem.INVALID
        assert error_of(appointments.set_exception, session, book.business_id, "2026-02-30", {}).field == "date"
        for body in (
            {"name": "x"},
            {"name": "x", "duration_minutes": 7},
            {"name": "x", "duration_minutes": 30, "price": 1.5},
        ):
            assert error_of(appointments.create_service, session, book.business_id, body).problem is Problem.INVALID
        assert error_of(appointments.update_book, session, book.business_id, {"capacity": 0}).field == "capacity"


def test_an_archived_service_takes_no_new_bookings(db, book):
    sunday = next_weekday(0)
    with db.scope() as session:
        appointments.archive_service(session, book.business_id, book.color)
        assert [s.id for s in appointments.list_services(session, book.business_id)] == [book.haircut]
    assert error_of(do_book, db, book, local(sunday, "10:00"), service=book.color).problem is Problem.NOT_FOUND


# ---- races ---------------------------------------------------------------------------------------
def _race(db, book, start, contenders: int):
    barrier = threading.Barrier(contenders)
    results: list[object] = [None] * contenders

    def contender(index: int) -> None:
        session = db.sessions()
        try:
            barrier.wait(10)
            results[index] = appointments.book(
                session,
                book.business_id,
                service_id=book.haircut,
                start=start,
                source="whatsapp",
                phone=f"05012340{index:02d}",
            )
        except DomainError as exc:
            results[index] = exc
        finally:
            session.close()

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


@pytest.mark.parametrize("capacity", [1, 3])
def test_concurrent_bookings_of_the_last_seats(db, tenant, capacity):
    book = set_up_book(db, tenant.business_id, capacity=capacity)
    sunday = next_weekday(0)
    start = local(sunday, "10:00")
    results = _race(db, book, start, contenders=8)
    won = [r for r in results if isinstance(r, appointments.AppointmentView)]
    lost = [r for r in results if isinstance(r, DomainError)]
    assert len(won) == capacity and len(lost) == 8 - capacity, results
    for error in lost:
        assert error.code == "slot_taken", error.message
        assert local(sunday, "09:30").isoformat() in error.details["alternatives"]
    with db.scope() as session:
        booked = appointments.list_appointments(session, book.business_id, sunday)
        assert len(booked) == capacity
        seats = session.execute(
            sa.select(AppointmentSeat.seat, sa.func.count())
            .group_by(AppointmentSeat.seat)
            .order_by(AppointmentSeat.seat)
        ).all()
        assert [tuple(row) for row in seats] == [(seat, 6) for seat in range(capacity)]


def test_the_seat_constraint_itself_refuses_a_double_booking(db, book):
    """Even a writer that skips the service's reading can't hold a taken seat."""
    sunday = next_weekday(0)
    booked = do_book(db, book, local(sunday, "10:00"))
    with pytest.raises(sa.exc.IntegrityError):
        with db.scope() as session:
            session.add(
                AppointmentSeat(
                    business_id=book.business_id,
                    appointment_id=booked.appointment.id,
                    seat=0,
                    unit_start=local(sunday, "10:05"),
                )
            )


def test_other_businesses_have_their_own_seats(db, book):
    sunday = next_weekday(0)
    other = create_tenant(db, name="Other", phone="+97235550201", whatsapp="+97235550202")
    theirs = set_up_book(db, other.business_id)
    do_book(db, book, local(sunday, "10:00"))
    do_book(db, theirs, local(sunday, "10:00"))


def test_a_stale_read_loses_to_the_constraint(db, book, monkeypatch):
    """A booking that read the seats before a rival committed (here: reads nothing taken at all) is
    refused by the unique key on insert, and answers `slot_taken`, not an error or a double booking."""
    sunday = next_weekday(0)
    do_book(db, book, local(sunday, "10:00"))
    from server.appointments import booking

    monkeypatch.setattr(booking, "_taken_seats", lambda *args, **kwargs: {})
    with db.scope() as session:
        error = error_of(
            booking.book,
            session,
            book.business_id,
            service_id=book.haircut,
            start=local(sunday, "10:00"),
            source="call",
            phone="0507654321",
        )
    assert error.code == "slot_taken"
    monkeypatch.undo()
    with db.scope() as session:
        assert len(appointments.list_appointments(session, book.business_id, sunday)) == 1


def test_the_console_hears_of_each_change(db, book):
    """Booked, moved and cancelled each leave an `appointment` event (the diary reloads on it); a
    booking refused as taken leaves none."""
    from server.db.models import Event

    sunday = next_weekday(0)
    booked = do_book(db, book, local(sunday, "10:00"))
    error_of(do_book, db, book, local(sunday, "10:00"), phone="0507654321")
    with db.scope() as session:
        appointments.move(session, book.business_id, booked.appointment.id, start=local(sunday, "11:00"))
    with db.scope() as session:
        appointments.cancel(session, book.business_id, booked.appointment.id)
    with db.scope() as session:
        events = session.execute(
            sa.select(Event.business_id, Event.payload).where(Event.kind == "appointment").order_by(Event.id)
        ).all()
    assert [(business, payload["status"]) for business, payload in events] == [
        (book.business_id, "booked"),
        (book.business_id, "booked"),
        (book.business_id, "cancelled"),
    ]
    assert {payload["appointment_id"] for _, payload in events} == {booked.appointment.id}


def test_concurrent_moves_into_one_free_slot(db, book):
    """Six appointments race to move into the same free time: one gets it, the others keep their own."""
    sunday = next_weekday(0)
    movers = [do_book(db, book, local(sunday, f"{9 + i}:00"), phone=f"05099900{i:02d}") for i in range(6)]
    target = local(sunday, "16:00")
    barrier = threading.Barrier(len(movers))
    results: list[object] = [None] * len(movers)

    def mover(index: int) -> None:
        session = db.sessions()
        try:
            barrier.wait(10)
            results[index] = appointments.move(session, book.business_id, movers[index].appointment.id, start=target)
        except DomainError as exc:
            results[index] = exc
        finally:
            session.close()

    threads = [threading.Thread(target=mover, args=(i,)) for i in range(len(movers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    won = [r for r in results if isinstance(r, appointments.AppointmentView)]
    assert len(won) == 1, results
    assert all(isinstance(r, DomainError) and r.code == "slot_taken" for r in results if r not in won)
    with db.scope() as session:
        starts = sorted(
            v.appointment.starts_at for v in appointments.list_appointments(session, book.business_id, sunday)
        )
        held = session.scalar(sa.select(sa.func.count()).select_from(AppointmentSeat))
    winner_index = results.index(won[0])
    expected = sorted([target] + [local(sunday, f"{9 + i}:00") for i in range(6) if i != winner_index])
    assert starts == expected and held == 6 * 6
