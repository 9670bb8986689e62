-- Daily statistics group a week's sessions by the day they started: the origin's by
-- date(session_start), tether_daily_stats_v1 (the operators' API) by the UTC day.
-- Without statistics on those expressions the planner takes each session's day for a
-- group of its own (as many groups as rows) and sorts every row of the week before it
-- counts them; with them it knows a week holds 7 or 8 days, and counts them in a hash
-- table, sorting nothing (10 to 40% less time on a year of history, as measured here).
-- ANALYZE (autovacuum's too) gathers them, at no cost to any write.
create statistics public.conversation_sessions_start_date_stats
  on (date(session_start)) from public.conversation_sessions;

create statistics public.conversation_sessions_start_utc_day_stats
  on (((session_start at time zone 'UTC')::date)) from public.conversation_sessions;

comment on statistics public.conversation_sessions_start_date_stats is
  'How many days the sessions start on, by date(session_start): daily statistics hash by day instead of sorting every row.';
comment on statistics public.conversation_sessions_start_utc_day_stats is
  'How many UTC days the sessions start on, as tether_daily_stats_v1 groups them.';
