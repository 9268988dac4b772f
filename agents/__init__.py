"""The conversational recommender: a LangGraph graph whose steps and LangChain tools call the one recommendation path."""
