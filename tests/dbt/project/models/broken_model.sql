{{ config(enabled=var('with_broken', false)) }}
select no_such_column from {{ ref('paid_orders') }}
