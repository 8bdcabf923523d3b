"""The answer side: statistics, scaling fits, the analysis, the recommendation, its words,
and the tables and figures every phase shares."""
