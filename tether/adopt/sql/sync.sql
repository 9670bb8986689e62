-- The transition's trigger: while the old server still writes is_active,
-- session_end, ended_at and duration_seconds itself, every write to the table
-- passes here, before it is stored, and leaves the row in step:
--   * a start written after now is now (the original kept in
--     tether.adoption_corrections), as the backfill reads one; so is an infinite one,
--     or one before 0001-01-02 UTC (west of UTC, year 1's first hours are 1 BC);
--   * a write that ends a session ends it at the first readable time it gives
--     (session_end, else ended_at, else now), never before the start nor after now, as
--     tether_end_session_v1 does; reason unrecorded when the writer gives none;
--   * an end is final, whoever writes again (the first end wins, as in tether);
--   * a row the backfill has not reached yet is first read by adoption's rules
--     (belief.sql), and what they correct is kept in tether.adoption_corrections;
--   * is_active, duration_seconds and ended_at follow session_end; an insert
--     without a connection id gets 'legacy:' || session_id (API Gateway ids never
--     hold a colon), and last_seen_at its last sign of life.
-- tether adopt --finish drops it, when is_active and duration_seconds become
-- generated columns. Its arguments: the name of the ended_at column it keeps in step
-- ('' if none), and whether duration_seconds and is_active were the old writers'
-- (not added by the adoption). The backfill, which writes rows already in step, sets
-- tether.adoption_backfill. It runs with its owner's rights, so that whichever role
-- the old server writes as may record a correction.
create or replace function tether.adoption_sync_row() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_ended_at_column text := nullif(tg_argv[0], '');
  v_had_duration boolean := coalesce(tg_argv[1], 'true')::boolean;
  v_had_is_active boolean := coalesce(tg_argv[2], 'true')::boolean;
  v_ended_at timestamptz;
  v_old_ended_at timestamptz;
  v_old_end timestamptz;
  v_old_reason text;
  v_belief record;
  v_known_start timestamptz;
  v_start_kind text;
  v_given_end timestamptz;
  -- The earliest moment read as one: Postgres takes infinities and years BC, few
  -- clients can read them (tether's commands could not).
  v_earliest constant timestamptz := '0001-01-02 00:00:00+00';
  v_duration numeric;
  v_sync jsonb;
begin
  if current_setting('tether.adoption_backfill', true) = 'on' then
    return new;
  end if;

  if v_ended_at_column is not null then
    v_ended_at := (to_jsonb(new) ->> v_ended_at_column)::timestamptz;
    if tg_op = 'UPDATE' then
      v_old_ended_at := (to_jsonb(old) ->> v_ended_at_column)::timestamptz;
    end if;
  end if;

  if tg_op = 'UPDATE' then
    v_known_start := old.session_start;
    if old.connection_id is not null then
      v_old_end := old.session_end;
      v_old_reason := old.end_reason;
    else
      select b.* into v_belief
      from (
        select case when v_had_is_active then old.is_active
                    else old.session_end is null end as is_active,
               old.session_start as session_start,
               old.session_end as session_end,
               v_old_ended_at as ended_at,
               case when v_had_duration
                    then (to_jsonb(old) ->> 'duration_seconds')::numeric end as duration_seconds,
               v_ended_at_column is not null as has_ended_at,
               v_had_duration as has_duration
      ) o
      cross join lateral (
{belief}
      ) b;
      if v_belief.changed then
        insert into tether.adoption_corrections (session_id, kinds, original)
        values (
          old.session_id,
          v_belief.kinds,
          jsonb_build_object(
            'is_active', old.is_active,
            'session_start', old.session_start,
            'session_end', old.session_end,
            'ended_at', v_old_ended_at,
            'duration_seconds', to_jsonb(old) -> 'duration_seconds'
          )
        )
        on conflict (session_id) do nothing;
      end if;
      v_known_start := v_belief.new_start;
      if new.session_start is not distinct from old.session_start then
        new.session_start := v_belief.new_start;
      end if;
      v_old_end := v_belief.new_end;
      v_old_reason := v_belief.new_reason;
    end if;
  end if;

  if tg_op = 'INSERT' then
    -- An upsert's insert comes first, and its row is what the update then writes: the
    -- start known of a row with this id is kept, as an update keeps it.
    select s.session_start into v_known_start
    from public.conversation_sessions s
    where s.session_id = new.session_id
      and isfinite(s.session_start) and s.session_start >= v_earliest;
  end if;

  -- A start written that cannot be believed, the original kept:
  --   * no_start: an infinite one, or one before 0001-01-02 UTC, is no moment (nor is none
  --     written by an update): as if none were written, an update keeps the start it
  --     knows, an insert's is then its end, else now;
  --   * start_in_future: one after now (a local clock read as UTC) starts now, the
  --     latest it can, as the backfill reads such a row; an update keeps the start it
  --     knows, since now could fall after the session's end.
  if tg_op = 'INSERT' or new.session_start is distinct from old.session_start then
    v_start_kind := case
      when new.session_start is null then case when tg_op = 'UPDATE' then 'no_start' end
      when not (isfinite(new.session_start) and new.session_start >= v_earliest)
        then 'no_start'
      when new.session_start > now() then 'start_in_future'
    end;
  end if;
  if v_start_kind is not null then
    insert into tether.adoption_corrections as c (session_id, kinds, original)
    values (new.session_id, array[v_start_kind],
            jsonb_build_object('session_start', new.session_start))
    on conflict (session_id) do update
      set kinds = array(select distinct k from unnest(c.kinds || excluded.kinds) k order by k),
          original = excluded.original || c.original;
    new.session_start := case
      when v_start_kind = 'no_start' then v_known_start
      else coalesce(v_known_start, now())
    end;
  end if;

  if v_old_end is not null then
    -- Already ended: that end stays, with its reason, and a start written after it is
    -- not believed.
    new.session_end := v_old_end;
    new.end_reason := v_old_reason;
    if new.session_start > v_old_end then
      new.session_start := v_known_start;
    end if;
  elsif (tg_op = 'INSERT'
         and (new.session_end is not null or v_ended_at is not null or new.is_active is false))
     or (tg_op = 'UPDATE'
         and ((new.session_end is not null and new.session_end is distinct from old.session_end)
              or (v_ended_at is not null and v_ended_at is distinct from v_old_ended_at)
              or (new.is_active is false and old.is_active is distinct from false))) then
    -- This write ends the session, at the first readable end it gives (session_end,
    -- else ended_at), else now. Without a start, that end is its start, as the backfill
    -- reads such a row.
    v_given_end := coalesce(
      case when isfinite(new.session_end) and new.session_end >= v_earliest
           then new.session_end end,
      case when isfinite(v_ended_at) and v_ended_at >= v_earliest then v_ended_at end
    );
    if new.session_start is null then
      new.session_start := least(coalesce(v_given_end, now()), now());
    end if;
    new.session_end := greatest(least(coalesce(v_given_end, now()), now()), new.session_start);
    new.end_reason := coalesce(new.end_reason, 'unrecorded');
  else
    new.session_start := coalesce(new.session_start, now());
    new.session_end := null;
    new.end_reason := null;
  end if;

  new.is_active := new.session_end is null;
  new.connection_id := coalesce(new.connection_id, 'legacy:' || new.session_id::text);
  new.last_seen_at := coalesce(new.last_seen_at, new.session_end, new.session_start);
  v_duration := extract(epoch from (new.session_end - new.session_start));
  v_sync := jsonb_build_object(
    'duration_seconds', v_duration,
    'tether_duration_seconds', v_duration
  );
  if v_ended_at_column is not null then
    v_sync := v_sync || jsonb_build_object(v_ended_at_column, new.session_end);
  end if;
  new := jsonb_populate_record(new, v_sync);
  return new;
end;
$fn$;

revoke execute on function tether.adoption_sync_row() from public;

comment on function tether.adoption_sync_row is
  'tether adopt''s transition: keeps is_active, duration_seconds and ended_at in step with session_end while the old server writes them; dropped by tether adopt --finish.';
