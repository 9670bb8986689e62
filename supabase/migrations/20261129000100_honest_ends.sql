-- Ends that keep their truth when the sweep and a $disconnect race, and claims that
-- a stale holder cannot disturb.
--
-- * An end intent: before the sweep asks the gateway to close a connection (the
--   heartbeat grace ran out), it records why and when the session ended. The
--   $disconnect that the close causes then ends the row with that reason and time,
--   whichever of the two gets there first. A sign of life after the intended end
--   voids the intent.
-- * A connection the gateway calls gone (410) is ended as `gone` only once it has
--   stayed gone for a settle time: a clean close answers 410 before its $disconnect
--   has run, and that $disconnect must keep its reason, code and time.
-- * The finalizer's claim carries a token: only its holder may finish or release it.
-- * The outbox counts its claims, so a redelivery is told from a first delivery.
--
-- New behaviour means new versions: the _v1 functions stay until a later release.

alter table public.conversation_sessions
  add column end_intent_reason public.tether_end_reason,
  add column end_intent_at timestamptz,
  add column gone_seen_at timestamptz,
  add column finalize_token uuid;

comment on column public.conversation_sessions.end_intent_reason is
  'Why the sweep is closing this connection at the gateway; the end that follows records it.';
comment on column public.conversation_sessions.end_intent_at is
  'The end time to record with end_intent_reason (the last sign of life); void once last_seen_at passes it.';
comment on column public.conversation_sessions.gone_seen_at is
  'When the gateway first answered that this connection is gone; the sweep ends it as gone after a settle time.';
comment on column public.conversation_sessions.finalize_token is
  'The token of the finalizer claim in force; only its holder may finish or release the claim.';

alter table public.conversation_session_announcements
  add column claim_count integer not null default 0;

comment on column public.conversation_session_announcements.claim_count is
  'How many times an announcer claimed this end; more than one is a redelivery.';


create function public.tether_end_session_v2(
  p_connection_id text,
  p_reason text,
  p_status_code integer default null,
  p_ended_at timestamptz default null,
  p_announce_lease_seconds double precision default 60
)
returns table (
  outcome text,
  session_id uuid,
  connection_id text,
  user_id uuid,
  session_start timestamptz,
  session_end timestamptz,
  duration_seconds numeric,
  end_reason text,
  disconnect_status_code integer
)
language plpgsql
volatile
security definer
set search_path = ''
as $$
#variable_conflict use_column
begin
  if p_reason is null then
    raise exception using errcode = '22023', message = 'an end reason is required';
  end if;
  perform p_reason::public.tether_end_reason;
  perform public.tether_require_range('announce lease', p_announce_lease_seconds, 0, 3600, true, 'seconds');

  -- The first end wins, as in _v1. An end intent still in force (no sign of life
  -- after it) gives the reason and the time; the caller's status code is kept.
  return query
    with ended as (
      update public.conversation_sessions as s
         set session_end = greatest(
               least(
                 case when s.end_intent_reason is not null and s.last_seen_at <= s.end_intent_at
                      then s.end_intent_at else coalesce(p_ended_at, now()) end,
                 now()),
               s.session_start),
             end_reason = case when s.end_intent_reason is not null
                                    and s.last_seen_at <= s.end_intent_at
                               then s.end_intent_reason else p_reason::public.tether_end_reason end,
             disconnect_status_code = p_status_code
       where s.connection_id = p_connection_id
         and s.is_active
      returning s.session_id, s.connection_id, s.user_id, s.session_start,
                s.session_end, s.duration_seconds, s.end_reason, s.disconnect_status_code
    ), queued as (
      insert into public.conversation_session_announcements (session_id, announce_after)
      select e.session_id, now() + make_interval(secs => p_announce_lease_seconds)
      from ended e
    )
    select 'ended'::text, e.session_id, e.connection_id, e.user_id, e.session_start,
           e.session_end, e.duration_seconds, e.end_reason::text, e.disconnect_status_code
    from ended e;

  if not found then
    return query
      select 'already_ended'::text, s.session_id, s.connection_id, s.user_id, s.session_start,
             s.session_end, s.duration_seconds, s.end_reason::text, s.disconnect_status_code
      from public.conversation_sessions s
      where s.connection_id = p_connection_id;
  end if;

  if not found then
    return query
      select 'unknown'::text, null::uuid, p_connection_id, null::uuid, null::timestamptz,
             null::timestamptz, null::numeric, null::text, null::integer;
  end if;
end;
$$;

comment on function public.tether_end_session_v2 is
  'Ends a session exactly once (first end wins); an end intent in force gives the reason and time.';


create function public.tether_intend_end_v1(
  p_session_ids uuid[],
  p_reason text,
  p_ended_ats timestamptz[]
)
returns table (session_id uuid, connection_id text, end_intent_at timestamptz)
language plpgsql
volatile
security definer
set search_path = ''
as $$
#variable_conflict use_column
begin
  if p_reason is null then
    raise exception using errcode = '22023', message = 'an end reason is required';
  end if;
  perform p_reason::public.tether_end_reason;
  if cardinality(p_session_ids) <> cardinality(p_ended_ats) then
    raise exception using errcode = '22023', message = 'one end time per session is required';
  end if;

  -- The intended end is the last sign of life the caller knows (the gateway's
  -- LastActiveAt may be fresher than last_seen_at): it becomes the last seen too.
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

comment on function public.tether_intend_end_v1 is
  'Records why and when these sessions end, before the sweep closes their connections at the gateway; a session seen alive since is left out.';


create function public.tether_settle_gone_v1(
  p_session_ids uuid[],
  p_settle_seconds double precision
)
returns table (session_id uuid, connection_id text, outcome text)
language plpgsql
volatile
security definer
set search_path = ''
as $$
#variable_conflict use_column
begin
  perform public.tether_require_range('settle time', p_settle_seconds, 0, 3600, true, 'seconds');

  -- First answer: remember it. Gone for the settle time and still active (no
  -- $disconnect came): end it at its last sign of life, or as its intent says.
  update public.conversation_sessions as s
     set gone_seen_at = now()
   where s.session_id = any (p_session_ids)
     and s.is_active
     and s.gone_seen_at is null;

  return query
    with picked as (
      select q.ctid
      from public.conversation_sessions q
      where q.session_id = any (p_session_ids)
        and q.is_active
        and q.gone_seen_at <= now() - make_interval(secs => p_settle_seconds)
      for update skip locked
    ), ended as (
      update public.conversation_sessions as s
         set session_end = greatest(
               case when s.end_intent_reason is not null and s.last_seen_at <= s.end_intent_at
                    then s.end_intent_at else s.last_seen_at end,
               s.session_start),
             end_reason = case when s.end_intent_reason is not null
                                    and s.last_seen_at <= s.end_intent_at
                               then s.end_intent_reason else 'gone' end
        from picked
       where s.ctid = picked.ctid
         and s.is_active
      returning s.session_id, s.connection_id, s.end_reason
    ), queued as (
      insert into public.conversation_session_announcements (session_id)
      select e.session_id from ended e
    )
    select e.session_id, e.connection_id, e.end_reason::text from ended e;
end;
$$;

comment on function public.tether_settle_gone_v1 is
  'For connections the gateway answered 410: remembers the first answer, and ends as gone (or as their end intent says) those gone for the settle time. Returns the ends.';


create function public.tether_claim_unannounced_v2(
  p_limit integer default 100,
  p_lease_seconds double precision default 60
)
returns table (
  session_id uuid,
  connection_id text,
  user_id uuid,
  session_start timestamptz,
  session_end timestamptz,
  duration_seconds numeric,
  end_reason text,
  disconnect_status_code integer,
  enqueued_at timestamptz,
  claim_count integer
)
language plpgsql
volatile
security definer
set search_path = ''
as $$
#variable_conflict use_column
begin
  perform public.tether_require_range('batch size', p_limit, 1, 10000, true, '');
  perform public.tether_require_range('lease', p_lease_seconds, 0, 3600, false, 'seconds');

  return query
    with claimed as (
      update public.conversation_session_announcements as a
         set announce_after = now() + make_interval(secs => p_lease_seconds),
             claim_count = a.claim_count + 1
       where a.session_id in (
         select q.session_id
         from public.conversation_session_announcements q
         where q.announce_after <= now()
         order by q.announce_after
         limit p_limit
         for update skip locked
       )
      returning a.session_id, a.enqueued_at, a.claim_count
    )
    select s.session_id, s.connection_id, s.user_id, s.session_start, s.session_end,
           s.duration_seconds, s.end_reason::text, s.disconnect_status_code, c.enqueued_at,
           c.claim_count
    from claimed c
    join public.conversation_sessions s on s.session_id = c.session_id;
end;
$$;

comment on function public.tether_claim_unannounced_v2 is
  'Claims up to p_limit ends still to be announced, leasing them; claim_count above 1 marks a redelivery.';


create function public.tether_begin_finalize_v2(
  p_session_id uuid,
  p_lease_seconds double precision default 300
)
returns table (outcome text, finalized_at timestamptz, claim_token uuid)
language plpgsql
volatile
security definer
set search_path = ''
as $$
#variable_conflict use_column
begin
  perform public.tether_require_range('lease', p_lease_seconds, 0, 3600, false, 'seconds');

  return query
    update public.conversation_sessions as s
       set finalize_after = now() + make_interval(secs => p_lease_seconds),
           finalize_token = gen_random_uuid()
     where s.session_id = p_session_id
       and not s.is_active
       and s.finalized_at is null
       and (s.finalize_after is null or s.finalize_after <= now())
    returning 'claimed'::text, s.finalized_at, s.finalize_token;
  if found then
    return;
  end if;

  return query
    select case
             when s.finalized_at is not null then 'already_finalized'
             when s.is_active then 'still_active'
             else 'in_progress'
           end,
           s.finalized_at,
           null::uuid
    from public.conversation_sessions s
    where s.session_id = p_session_id;
  if not found then
    return query select 'unknown'::text, null::timestamptz, null::uuid;
  end if;
end;
$$;

comment on function public.tether_begin_finalize_v2 is
  'Claims an ended session for its finalizer and returns the claim''s token: claimed, already_finalized, in_progress, still_active or unknown.';


create function public.tether_finish_finalize_v2(
  p_session_id uuid,
  p_claim_token uuid,
  p_succeeded boolean
)
returns table (session_id uuid, finalized_at timestamptz)
language sql
volatile
security definer
set search_path = ''
as $$
  -- Only the claim in force: a holder whose lease ran out (and was claimed again)
  -- changes nothing.
  update public.conversation_sessions as s
     set finalized_at = case when p_succeeded then now() else null end,
         finalize_after = null,
         finalize_token = null
   where s.session_id = p_session_id
     and s.finalized_at is null
     and s.finalize_token = p_claim_token
  returning s.session_id, s.finalized_at;
$$;

comment on function public.tether_finish_finalize_v2 is
  'Ends the finalizer claim whose token is given: finalized_at on success, the lease released on failure. A stale token changes nothing.';


revoke execute on function
  public.tether_end_session_v2(text, text, integer, timestamptz, double precision),
  public.tether_intend_end_v1(uuid[], text, timestamptz[]),
  public.tether_settle_gone_v1(uuid[], double precision),
  public.tether_claim_unannounced_v2(integer, double precision),
  public.tether_begin_finalize_v2(uuid, double precision),
  public.tether_finish_finalize_v2(uuid, uuid, boolean)
from public, anon, authenticated;

grant execute on function
  public.tether_end_session_v2(text, text, integer, timestamptz, double precision),
  public.tether_intend_end_v1(uuid[], text, timestamptz[]),
  public.tether_settle_gone_v1(uuid[], double precision),
  public.tether_claim_unannounced_v2(integer, double precision),
  public.tether_begin_finalize_v2(uuid, double precision),
  public.tether_finish_finalize_v2(uuid, uuid, boolean)
to service_role;
