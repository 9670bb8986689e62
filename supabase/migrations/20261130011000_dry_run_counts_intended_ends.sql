-- `tether sweep --dry-run` (tether_sweep_preview_v3) did not count what the run then
-- did:
-- * a session whose end intent is still in force (a sweep closed its silent connection
--   and was stopped before ending it) was counted as past the idle or the age limit,
--   while tether_close_stale_v3 ends it with the intent's reason at the intent's time;
-- * ends leased to a caller at work on them (a $disconnect or a kick announcing its own
--   end, a run that claimed them, or one killed holding them, until its lease ends) were
--   counted as ends it would announce, and suspects a run under way was asking about as
--   suspects it would ask about. The run takes neither.
--
-- * tether_sweep_preview_v4 counts each due session as tether_close_stale_v3 ends it
--   (past_max_age, past_idle, intended), its suspects and unannounced are those a run
--   would take now (tether_claim_suspects_v1, tether_claim_unannounced_v2), and
--   unannounced_held counts the ends held by their lease, which the caller holding
--   them announces, or a later run once the lease has ended.
--
-- tether_sweep_preview_v3 stays as it is until a later release drops it.

create function public.tether_sweep_preview_v4(
  p_idle_seconds double precision,
  p_max_age_seconds double precision,
  p_silent_seconds double precision
)
returns table (
  past_max_age bigint,
  past_idle bigint,
  intended bigint,
  suspects bigint,
  unannounced bigint,
  unannounced_held bigint
)
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
set lock_timeout = '3s'
set plan_cache_mode = force_custom_plan
as $$
#variable_conflict use_column
declare
  v_now timestamptz := now();
  v_idle interval;
  v_max_age interval;
begin
  -- The ranges the sweep itself runs with (tether_close_stale_v3, tether_claim_suspects_v1).
  perform public.tether_require_range('idle limit', p_idle_seconds, 0, 86400, false, 'seconds');
  perform public.tether_require_range('age limit', p_max_age_seconds, 0, 604800, false, 'seconds');
  perform public.tether_require_range('silence', p_silent_seconds, 0, 86400, true, 'seconds');
  v_idle := make_interval(secs => p_idle_seconds);
  v_max_age := make_interval(secs => p_max_age_seconds);

  return query
    with due as (
      -- What tether_close_stale_v3 takes, each with the reason it gives.
      select case
               when s.end_intent_reason is not null and s.last_seen_at <= s.end_intent_at
                    and s.end_intent_at <= s.session_start + v_max_age
               then 'intended'
               when s.last_seen_at + v_idle <= s.session_start + v_max_age
               then 'idle'
               else 'max_age' end as why
      from public.conversation_sessions s
      where s.is_active
        and (s.session_start < v_now - v_max_age or s.last_seen_at < v_now - v_idle)
    )
    select
      (select count(*) from due d where d.why = 'max_age'),
      (select count(*) from due d where d.why = 'idle'),
      (select count(*) from due d where d.why = 'intended'),
      -- Those a run would claim: not leased to a run asking about them now.
      (select count(*) from public.conversation_sessions s
        where s.is_active and s.last_seen_at < v_now - make_interval(secs => p_silent_seconds)
          and s.last_seen_at >= v_now - v_idle
          and s.session_start >= v_now - v_max_age
          and (s.check_after is null or s.check_after <= v_now)),
      (select count(*) from public.conversation_session_announcements a
        where a.announce_after <= v_now),
      (select count(*) from public.conversation_session_announcements a
        where a.announce_after > v_now);
end;
$$;

comment on function public.tether_sweep_preview_v4 is
  'What a sweep with these limits would do now, writing nothing: sessions it would end for the age limit and for the idle limit (each for the limit it reached first), with the reason of their end intent in force (intended), suspects it would ask the gateway about, ends it would announce, and ends whose lease holds them for the caller announcing them (unannounced_held).';

comment on function public.tether_sweep_preview_v3 is
  'What a sweep with these limits would do now, writing nothing: sessions it would end for the age limit and for the idle limit (each for the limit it reached first), silent enough to ask the gateway about, and ends not yet announced. Superseded by tether_sweep_preview_v4, which counts as the run ends and takes.';

revoke execute on function
  public.tether_sweep_preview_v4(double precision, double precision, double precision)
from public, anon, authenticated;

grant execute on function
  public.tether_sweep_preview_v4(double precision, double precision, double precision)
to service_role;
