-- Members reconcile their holdings from the rows changed since their last look.
CREATE INDEX IF NOT EXISTS dmtree_resources_updated ON dmtree_resources (updated);
