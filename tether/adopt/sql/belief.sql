-- How tether adopt reads a row the old writers left: one start, one end, one
-- reason. The README's "Adopting an existing table" states these rules; the
-- read-only report, the backfill and the transition's trigger all run this text,
-- so what --check predicts is what --apply does.
--
-- Input: a row o (is_active, session_start, session_end, ended_at,
-- duration_seconds numeric, has_ended_at, has_duration). now() is the moment of
-- reading: no recorded moment after it is believable.
--
--  1. The start is session_start, never after now. A row without a start (or with
--     an infinite one, or one before 0001-01-02 00:00 UTC, which Postgres takes: west
--     of UTC the first hours of year 1 are year 1 BC, which few clients can read; Go's
--     and .NET's zero time is one) starts at its recorded end, else now, and counts as
--     ended: it cannot be live. Such a recorded end is no moment either (rule 3).
--  2. A row says it ended when is_active is false, or it holds session_end or
--     ended_at (is_active is not believed against a recorded moment).
--  3. Its end is the first believable moment among session_end, ended_at, and
--     session_start + duration_seconds (the end the writer's duration was computed
--     from): believable means between the start and now. Reason: unrecorded.
--  4. A row that says it ended with no believable moment ended at an unknown time:
--     its end is its start (the last sign of life known, a lower bound). Reason:
--     end_unknown.
--  5. Otherwise it is active. is_active, duration_seconds and ended_at follow the end.
select
  t.new_start,
  t.new_end,
  t.new_reason,
  t.new_duration,
  array_remove(array[
    case when not t.start_known then 'no_start' end,
    case when o.session_start > now() and isfinite(o.session_start) then 'start_in_future' end,
    case when o.is_active is null then 'is_active_null' end,
    case when o.is_active and (o.session_end is not null or o.ended_at is not null)
         then 'active_with_end' end,
    case when o.is_active is false and o.session_end is null then 'inactive_without_end' end,
    case when o.session_end < o.session_start then 'end_before_start' end,
    case when o.session_end > now() then 'end_in_future' end,
    case when o.has_ended_at and o.ended_at is distinct from o.session_end
         then 'ended_at_differs' end,
    case when t.duration_differs then 'duration_differs' end
  ], null) as kinds,
  (o.is_active is distinct from (t.new_end is null)
   or o.session_start is distinct from t.new_start
   or o.session_end is distinct from t.new_end
   or (o.has_ended_at and o.ended_at is distinct from t.new_end)
   or t.duration_differs) as changed
from (
  select
    e.*,
    o.has_duration
      and o.duration_seconds is distinct from e.new_duration
      and (o.duration_seconds is null
           or e.new_duration is null
           or abs(o.duration_seconds - e.new_duration) > 0.001) as duration_differs
  from (
    select
      m.new_start,
      m.start_known,
      m.new_end,
      case when m.new_end is null then null
           when m.moment is not null then 'unrecorded'
           else 'end_unknown' end as new_reason,
      extract(epoch from (m.new_end - m.new_start)) as new_duration
    from (
      select
        c.*,
        case when c.said_ended then coalesce(c.moment, c.new_start) end as new_end
      from (
        select
          s.*,
          case
            when s.readable_end >= s.new_start and s.readable_end <= now()
              then s.readable_end
            when s.readable_ended_at >= s.new_start and s.readable_ended_at <= now()
              then s.readable_ended_at
            when s.by_duration >= s.new_start and s.by_duration <= now()
              then s.by_duration
          end as moment
        from (
          select
            r.start is not null as start_known,
            case
              when r.start is not null then least(r.start, now())
              else least(coalesce(r.session_end, r.ended_at, now()), now())
            end as new_start,
            coalesce(
              o.is_active is false
              or o.session_end is not null
              or o.ended_at is not null
              or r.start is null,
              true
            ) as said_ended,
            case
              when o.duration_seconds >= 0 and o.duration_seconds < 315576000
                then r.start + make_interval(secs => o.duration_seconds::double precision)
            end as by_duration,
            r.session_end as readable_end,
            r.ended_at as readable_ended_at
          from (
            -- Each recorded moment, if it is one: an infinite one, or one before
            -- 0001-01-02 UTC (Postgres takes them; west of UTC the first hours of year
            -- 1 are year 1 BC; few clients can read them), is none.
            select
              case when isfinite(o.session_start) and o.session_start >= '0001-01-02 00:00:00+00'
                   then o.session_start end as start,
              case when isfinite(o.session_end) and o.session_end >= '0001-01-02 00:00:00+00'
                   then o.session_end end as session_end,
              case when isfinite(o.ended_at) and o.ended_at >= '0001-01-02 00:00:00+00'
                   then o.ended_at end as ended_at
          ) r
        ) s
      ) c
    ) m
  ) e
) t
