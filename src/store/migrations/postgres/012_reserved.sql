-- creditgate schema v12: a placeholder on branch rollup22 only, so the migrations stay gap-free:
-- version 12 is branch core22's (012_operator_reads); the integrator drops this file
-- and keeps that one.
SELECT 1;
