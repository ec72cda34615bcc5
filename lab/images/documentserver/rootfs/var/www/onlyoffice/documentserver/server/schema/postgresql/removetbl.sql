--
-- Drop tables (shaped like ONLYOFFICE's server/schema/postgresql/removetbl.sql)
--
DROP TABLE IF EXISTS "doc_changes";
DROP TABLE IF EXISTS "task_result";
