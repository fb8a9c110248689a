"""Generated dashboard specs: the schema and its checks, the rule-based and model generators, Grafana export."""
