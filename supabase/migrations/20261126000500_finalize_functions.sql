-- The SessionEnded subscriber's bookkeeping: a redelivered event must not run the
-- application's finalizer (memory, analytics) twice. A claim is a lease, so a
-- subscriber that dies mid-way leaves the session to the next delivery.

create function public.tether_begin_finalize_v1(
  p_session_id uuid,
  p_lease_seconds double precision default 300
)
returns table (outcome text, finalized_at timestamptz)
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
       set finalize_after = now() + make_interval(secs => p_lease_seconds)
     where s.session_id = p_session_id
       and not s.is_active
       and s.finalized_at is null
       and (s.finalize_after is null or s.finalize_after <= now())
    returning 'claimed'::text, s.finalized_at;
  if found then
    return;
  end if;

  return query
    select case
             when s.finalized_at is not null then 'already_finalized'
             when s.is_active then 'still_active'
             else 'in_progress'
           end,
           s.finalized_at
    from public.conversation_sessions s
    where s.session_id = p_session_id;
  if not found then
    return query select 'unknown'::text, null::timestamptz;
  end if;
end;
$$;

comment on function public.tether_begin_finalize_v1 is
  'Claims an ended session for its finalizer: claimed, already_finalized, in_progress (another holds the lease), still_active or unknown.';


create function public.tether_finish_finalize_v1(p_session_id uuid, p_succeeded boolean)
returns table (session_id uuid, finalized_at timestamptz)
language sql
volatile
security definer
set search_path = ''
as $$
  -- Success records the time; failure drops the lease so the retry can claim at once.
  update public.conversation_sessions as s
     set finalized_at = case when p_succeeded then now() else null end,
         finalize_after = null
   where s.session_id = p_session_id
     and s.finalized_at is null
  returning s.session_id, s.finalized_at;
$$;

comment on function public.tether_finish_finalize_v1 is
  'Ends a finalizer claim: records finalized_at on success, releases the lease on failure.';

revoke execute on function
  public.tether_begin_finalize_v1(uuid, double precision),
  public.tether_finish_finalize_v1(uuid, boolean)
from public, anon, authenticated;

grant execute on function
  public.tether_begin_finalize_v1(uuid, double precision),
  public.tether_finish_finalize_v1(uuid, boolean)
to service_role;
