"""Projects: the use case a model serves, its objective, KPIs, constraints and stakeholders."""
