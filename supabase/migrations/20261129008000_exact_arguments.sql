-- Second versions of the sweep's and the outbox's functions that took what they were
-- given on trust. Only tether calls them, but any holder of service_role can, and a
-- bad argument must be refused with nothing written, not read as something else:
--
-- * tether_release_announcements_v2 releases only the claims its caller still holds
--   (v1 released whoever's lease it found: an announcer that failed late could hand a
--   batch another announcer was sending back to the queue, which sent it twice), and
--   counts the end's own failed try, so the sweep's retry is reported as a redelivery;
-- * tether_intend_end_v2 and tether_settle_suspects_v2 refuse missing arrays, arrays
--   of unequal length, null or repeated session ids and infinite times (v1 read a
--   missing array as "nothing qualified", paired unequal arrays with nulls, and took
--   'infinity' as now);
-- * tether_close_orphans_v2, tether_orphan_summary_v2 and tether_sweep_preview_v2
--   refuse an age, limit or silence out of range (an infinite age failed with an
--   interval error, and a missing one counted every live session as an orphan);
-- * tether_record_sweep_v2 refuses a start no client can read and a report that is
--   not a JSON object.
--
-- The _v1 functions stay as they are until a later release drops them. Every function
-- here pins its search_path, lock_timeout and plan_cache_mode in its definition (the
-- loops of 20261129003000, 20261129004000 and 20261129007000 ran before it existed).

create function public.tether_require_pairs(
  p_session_ids uuid[],
  p_values anyarray,
  p_value_name text,
  p_values_nullable boolean
)
returns void
language plpgsql
immutable
set search_path = pg_catalog, pg_temp
as $$
begin
  if p_session_ids is null or p_values is null then
    raise exception using
      errcode = '22023',
      message = format('session ids and %ss are required (empty arrays for none)', p_value_name);
  end if;
  if cardinality(p_session_ids) <> cardinality(p_values) then
    raise exception using
      errcode = '22023',
      message = format('one %s per session is required, got %s for %s session(s)',
                       p_value_name, cardinality(p_values), cardinality(p_session_ids));
  end if;
  if array_position(p_session_ids, null) is not null then
    raise exception using errcode = '22023', message = 'a session id cannot be null';
  end if;
  -- Listed twice, a session would take whichever of its values the join met first.
  if cardinality(p_session_ids) <> (select count(distinct i.id) from unnest(p_session_ids) as i (id)) then
    raise exception using errcode = '22023', message = 'a session is listed more than once';
  end if;
  if not p_values_nullable and array_position(p_values, null) is not null then
    raise exception using errcode = '22023', message = format('a session''s %s cannot be null', p_value_name);
  end if;
end;
$$;

revoke execute on function public.tether_require_pairs(uuid[], anyarray, text, boolean)
from public, anon, authenticated;


comment on column public.conversation_session_announcements.claim_count is
  'How many tries to announce this end were made: each claim, and the end''s own try once it failed; more than one is a redelivery.';


create function public.tether_release_announcements_v2(
  p_session_ids uuid[],
  p_claim_counts integer[]
)
returns table (session_id uuid, announce_after timestamptz, claim_count integer)
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
set lock_timeout = '3s'
set plan_cache_mode = force_custom_plan
as $$
#variable_conflict use_column
begin
  perform public.tether_require_pairs(p_session_ids, p_claim_counts, 'claim count', false);
  if exists (select 1 from unnest(p_claim_counts) as c (n) where c.n < 0) then
    raise exception using errcode = '22023', message = 'a claim count cannot be negative';
  end if;

  -- A claim is still its caller's while nobody has claimed the end since: the count
  -- is the one the caller claimed it with (0 for the end's own try, made before any
  -- claim). A try that failed counts as one, so the retry reads as a redelivery.
  return query
    update public.conversation_session_announcements as a
       set announce_after = now(),
           claim_count = greatest(a.claim_count, 1)
      from unnest(p_session_ids, p_claim_counts) as r (session_id, claim_count)
     where a.session_id = r.session_id
       and a.claim_count = r.claim_count
    returning a.session_id, a.announce_after, a.claim_count;
end;
$$;

comment on function public.tether_release_announcements_v2 is
  'EventBridge refused these ends: each whose claim the caller still holds (the claim count it was claimed with, 0 for the end''s own try) is released for the next sweep to retry at once.';


create function public.tether_intend_end_v2(
  p_session_ids uuid[],
  p_reason text,
  p_ended_ats timestamptz[]
)
returns table (session_id uuid, connection_id text, end_intent_at timestamptz)
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
set lock_timeout = '3s'
set plan_cache_mode = force_custom_plan
as $$
#variable_conflict use_column
begin
  if p_reason is null then
    raise exception using errcode = '22023', message = 'an end reason is required';
  end if;
  perform p_reason::public.tether_end_reason;
  perform public.tether_require_pairs(p_session_ids, p_ended_ats, 'end time', false);
  if exists (select 1 from unnest(p_ended_ats) as t (at) where not isfinite(t.at)) then
    raise exception using errcode = '22023', message = 'an end time must be a finite moment';
  end if;

  -- As v1: the intended end is the last sign of life the caller knows (the gateway's
  -- LastActiveAt may be fresher than last_seen_at), and it becomes the last seen too.
  return query
    update public.conversation_sessions as s
       set end_intent_reason = p_reason,
           end_intent_at = greatest(least(i.ended_at, now()), s.session_start),
           last_seen_at = greatest(s.last_seen_at, least(i.ended_at, now()))
      from unnest(p_session_ids, p_ended_ats) as i (session_id, ended_at)
     where s.session_id = i.session_id
       and s.is_active
       -- A sign of life since the caller looked (a heartbeat meanwhile): not silent.
       and s.last_seen_at <= i.ended_at
    returning s.session_id, s.connection_id, s.end_intent_at;
end;
$$;

comment on function public.tether_intend_end_v2 is
  'Records why and when these sessions end, before the sweep closes their connections at the gateway; a session seen alive since is left out. One end time per session.';


create function public.tether_settle_suspects_v2(
  p_session_ids uuid[],
  p_last_active_ats timestamptz[]
)
returns table (session_id uuid, last_seen_at timestamptz)
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
set lock_timeout = '3s'
set plan_cache_mode = force_custom_plan
as $$
#variable_conflict use_column
begin
  -- A null time is the gateway's "no answer", as in v1.
  perform public.tether_require_pairs(p_session_ids, p_last_active_ats, 'last active time', true);
  if exists (select 1 from unnest(p_last_active_ats) as t (at) where not isfinite(t.at)) then
    raise exception using errcode = '22023', message = 'a last active time must be a finite moment';
  end if;

  return query
    update public.conversation_sessions as s
       set last_seen_at = greatest(s.last_seen_at, least(coalesce(a.last_active_at, s.last_seen_at), now())),
           check_after = now()
      from unnest(p_session_ids, p_last_active_ats) as a (session_id, last_active_at)
     where s.session_id = a.session_id
       and s.is_active
    returning s.session_id, s.last_seen_at;
end;
$$;

comment on function public.tether_settle_suspects_v2 is
  'The suspects the gateway says are connected (or could not answer for, a null time): last_seen_at moves forward to their LastActiveAt, never past now, and their leases end.';


create function public.tether_close_orphans_v2(
  p_older_than_seconds double precision,
  p_limit integer default 500
)
returns table (end_reason text, ended bigint)
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
set lock_timeout = '3s'
set plan_cache_mode = force_custom_plan
as $$
#variable_conflict use_column
begin
  -- A year and a day at most: as far back as the operators' commands reach.
  perform public.tether_require_range('age', p_older_than_seconds, 0, 31622400, false, 'seconds');
  perform public.tether_require_range('batch size', p_limit, 1, 10000, true, '');

  return query
    with picked as (
      select q.ctid
      from public.conversation_sessions q
      where q.is_active
        and q.session_start < now() - make_interval(secs => p_older_than_seconds)
      order by q.session_start
      limit p_limit
      for update skip locked
    ), ended as (
      update public.conversation_sessions as s
         set session_end = greatest(s.last_seen_at, s.session_start),
             end_reason = 'orphan_cleanup'
        from picked
       where s.ctid = picked.ctid
         and s.is_active
      returning s.session_id, s.end_reason
    ), queued as (
      insert into public.conversation_session_announcements (session_id)
      select e.session_id from ended e
    )
    select e.end_reason::text, count(*) from ended e group by e.end_reason;
end;
$$;

comment on function public.tether_close_orphans_v2 is
  'The one-off clean-up: ends up to p_limit active sessions started before the age given (at most 366 days), with reason orphan_cleanup, at their last sign of life, and queues their announcements.';


create function public.tether_orphan_summary_v2(p_older_than_seconds double precision)
returns table (orphans bigint, oldest_start timestamptz, newest_start timestamptz)
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
set lock_timeout = '3s'
set plan_cache_mode = force_custom_plan
as $$
#variable_conflict use_column
begin
  perform public.tether_require_range('age', p_older_than_seconds, 0, 31622400, false, 'seconds');

  return query
    select count(*), min(s.session_start), max(s.session_start)
    from public.conversation_sessions s
    where s.is_active
      and s.session_start < now() - make_interval(secs => p_older_than_seconds);
end;
$$;

comment on function public.tether_orphan_summary_v2 is
  'What tether_close_orphans_v2 would end for this age: how many active sessions started before it, the oldest start and the newest.';


create function public.tether_sweep_preview_v2(
  p_idle_seconds double precision,
  p_max_age_seconds double precision,
  p_silent_seconds double precision
)
returns table (past_max_age bigint, past_idle bigint, suspects bigint, unannounced bigint)
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
set lock_timeout = '3s'
set plan_cache_mode = force_custom_plan
as $$
#variable_conflict use_column
begin
  -- The ranges the sweep itself runs with (tether_close_stale_v1, tether_claim_suspects_v1).
  perform public.tether_require_range('idle limit', p_idle_seconds, 0, 86400, false, 'seconds');
  perform public.tether_require_range('age limit', p_max_age_seconds, 0, 604800, false, 'seconds');
  perform public.tether_require_range('silence', p_silent_seconds, 0, 86400, true, 'seconds');

  return query
    select
      (select count(*) from public.conversation_sessions s
        where s.is_active and s.session_start < now() - make_interval(secs => p_max_age_seconds)),
      (select count(*) from public.conversation_sessions s
        where s.is_active and s.last_seen_at < now() - make_interval(secs => p_idle_seconds)
          and s.session_start >= now() - make_interval(secs => p_max_age_seconds)),
      (select count(*) from public.conversation_sessions s
        where s.is_active and s.last_seen_at < now() - make_interval(secs => p_silent_seconds)
          and s.last_seen_at >= now() - make_interval(secs => p_idle_seconds)
          and s.session_start >= now() - make_interval(secs => p_max_age_seconds)),
      (select count(*) from public.conversation_session_announcements);
end;
$$;

comment on function public.tether_sweep_preview_v2 is
  'What a sweep with these limits would do now, writing nothing: sessions past the age limit, past the idle limit, silent enough to ask the gateway about, and ends not yet announced.';


create function public.tether_record_sweep_v2(
  p_idle_limit_seconds double precision,
  p_max_age_seconds double precision,
  p_report jsonb default null,
  p_started_at timestamptz default null
)
returns table (last_started_at timestamptz, last_finished_at timestamptz)
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
set lock_timeout = '3s'
set plan_cache_mode = force_custom_plan
as $$
#variable_conflict use_column
begin
  perform public.tether_require_range('idle limit', p_idle_limit_seconds, 0, 86400, false, 'seconds');
  perform public.tether_require_range('age limit', p_max_age_seconds, 0, 604800, false, 'seconds');
  if p_report is not null and jsonb_typeof(p_report) <> 'object' then
    raise exception using
      errcode = '22023',
      message = format('a sweep report must be a JSON object, got %s', jsonb_typeof(p_report));
  end if;
  -- The bound a session's start is held to (20261129006000).
  if p_started_at is not null
     and not (isfinite(p_started_at) and p_started_at >= '0001-01-02 00:00:00+00') then
    raise exception using
      errcode = '22023',
      message = format('a sweep''s start must be a readable moment, got %s', p_started_at);
  end if;

  if p_report is not null then
    insert into tether.sweep_runs (started_at, report)
    values (least(coalesce(p_started_at, now()), now()), p_report);
    delete from tether.sweep_runs r where r.finished_at < now() - interval '7 days';
  end if;

  -- Without a report: a run starts (its limits). With one: it finished.
  return query
    update tether.sweep_state as w
       set idle_limit_seconds = p_idle_limit_seconds,
           max_age_seconds = p_max_age_seconds,
           last_started_at = case when p_report is null then now() else w.last_started_at end,
           last_finished_at = case when p_report is null then w.last_finished_at else now() end,
           last_report = coalesce(p_report, w.last_report)
     where w.singleton
    returning w.last_started_at, w.last_finished_at;
end;
$$;

comment on function public.tether_record_sweep_v2 is
  'Records the limits a sweep runs with (at its start) and, at its end, its report, a JSON object (kept a week in tether.sweep_runs).';


-- The _v1 functions that had no description.
comment on function public.tether_settle_suspects_v1 is
  'The suspects the gateway says are connected (or could not answer for): last_seen_at moves forward to their LastActiveAt, never past now, and their leases end. Superseded by tether_settle_suspects_v2.';
comment on function public.tether_release_announcements_v1 is
  'EventBridge refused these ends: releases them for the next sweep to retry at once, whoever holds them. Superseded by tether_release_announcements_v2.';
comment on function public.tether_orphan_summary_v1 is
  'What tether_close_orphans_v1 would end for this age. Superseded by tether_orphan_summary_v2.';
comment on function public.tether_sweep_preview_v1 is
  'What a sweep with these limits would do now, writing nothing. Superseded by tether_sweep_preview_v2.';


revoke execute on function
  public.tether_release_announcements_v2(uuid[], integer[]),
  public.tether_intend_end_v2(uuid[], text, timestamptz[]),
  public.tether_settle_suspects_v2(uuid[], timestamptz[]),
  public.tether_close_orphans_v2(double precision, integer),
  public.tether_orphan_summary_v2(double precision),
  public.tether_sweep_preview_v2(double precision, double precision, double precision),
  public.tether_record_sweep_v2(double precision, double precision, jsonb, timestamptz)
from public, anon, authenticated;

grant execute on function
  public.tether_release_announcements_v2(uuid[], integer[]),
  public.tether_intend_end_v2(uuid[], text, timestamptz[]),
  public.tether_settle_suspects_v2(uuid[], timestamptz[]),
  public.tether_close_orphans_v2(double precision, integer),
  public.tether_orphan_summary_v2(double precision),
  public.tether_sweep_preview_v2(double precision, double precision, double precision),
  public.tether_record_sweep_v2(double precision, double precision, jsonb, timestamptz)
to service_role;
